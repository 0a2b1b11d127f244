"""One training run in a fresh process, so that a CPU run's peak memory is its own.

A sweep trains cell after cell in one process, and a process's resident high-water mark only
grows: measured in place, every cell after the biggest would report the biggest's peak.
:func:`train_isolated` runs :func:`~.trainer.train` in a fresh process and returns its result,
whose peak is that process's resident high-water mark (``VmHWM``), reset when training starts
(:mod:`.rss`): the interpreter, torch and the libraries, the dataset and this run's training,
and nothing of any other run (``mem_method = "cpu-rss-subprocess"``).

The fresh process is forked from a *zygote*: a Python process started once
(``python -m elastic_bench.train.isolated --serve``) that imports torch, the optimizers'
``torch._dynamo`` and every registered backend, and then never runs a tensor operation (so
forking it is safe, and no run leaves anything in it); each run is one child of it, which
exits when the run ends.  Starting a run costs milliseconds instead of the seconds of a new
interpreter.  Where ``os.fork`` does not exist, each run is a new interpreter
(``python -m elastic_bench.train.isolated IN OUT``).  No module of the caller's is re-run
(unlike ``multiprocessing``'s spawn, which re-imports ``__main__``).

Not ``ru_maxrss``: on Linux a child process begins as a fork of its parent, and ``exec``
carries the parent's high-water mark into the child's ``ru_maxrss`` (and into the parent's
``RUSAGE_CHILDREN``), so a parent holding 1 GB makes every child report at least 1 GB.

The backend class is sent along and registered in the child, so a backend registered at run
time from an importable module trains there too; one defined in ``__main__`` (or inside a
function) cannot be imported by another process, and trains here instead (``cpu-vmhwm-reset``).
An error of the run is raised here again (same type where it pickles); a run that dies without
answering (e.g. killed by the kernel's OOM killer) raises ChildProcessError.

Example::

    result = train_isolated(cfg, dataset)     # cfg: a TrainConfig on the CPU
    result.peak_mem_mb, result.mem_method     # (412.3, "cpu-rss-subprocess")
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..data.formats import SequenceDataset
from .config import TrainConfig
from .rss import status_mb
from .trainer import TrainResult, train

METHOD = "cpu-rss-subprocess"
FALLBACK_METHOD = "cpu-maxrss-subprocess (upper bound: includes the parent's RSS at spawn)"


def train_isolated(cfg: TrainConfig, dataset: SequenceDataset, checkpoint: Path | None = None) -> TrainResult:
    """``train(cfg, dataset, checkpoint)`` in a fresh process, with this process's torch thread
    count; a ``checkpoint`` is written every epoch and resumed from when it exists."""
    cls = _backend_class(cfg.model)
    if cls is not None and not _importable(cls):
        return train(cfg, dataset, checkpoint)
    with tempfile.TemporaryDirectory(prefix="elastic-bench-cell-") as tmp:
        inp, out = Path(tmp) / "in.pkl", Path(tmp) / "out.pkl"
        inp.write_bytes(pickle.dumps((cfg, dataset, torch.get_num_threads(), cls, checkpoint), protocol=pickle.HIGHEST_PROTOCOL))
        code = _run_child(inp, out)
        if not out.is_file():
            raise ChildProcessError(f"the training process ended without a result ({_exit_reason(code)})")
        kind, payload = pickle.loads(out.read_bytes())
    if kind == "error":
        raise payload
    return payload


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # import what this process imports


class Zygote:
    """The pre-imported process that forks one child per run; one per process that asks."""

    _lock = threading.Lock()
    _current: "Zygote | None" = None

    def __init__(self) -> None:
        cmd = [sys.executable, "-m", __name__, "--serve"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(), text=True)

    def run(self, inp: Path, out: Path) -> int:
        """The exit status of one child that ran ``_child(inp, out)``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{inp}\t{out}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise ChildProcessError(f"the zygote process ended ({_exit_reason(self.proc.wait())})")
        return int(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @classmethod
    def shared(cls) -> "Zygote":
        if cls._current is None or cls._current.proc.poll() is not None:
            cls._current = Zygote()
        return cls._current


def _run_child(inp: Path, out: Path) -> int:
    if not hasattr(os, "fork"):
        return subprocess.run([sys.executable, "-m", __name__, str(inp), str(out)], env=_env()).returncode  # killed if interrupted
    with Zygote._lock:
        zygote = Zygote.shared()
        try:
            return zygote.run(inp, out)
        except BaseException:  # interrupted or broken: its answer may still come, so never reuse it
            zygote.close()
            Zygote._current = None
            raise


def _die_with_parent() -> None:
    """Linux: be killed when the parent process ends (no run outlives the sweep that asked)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve() -> None:
    """The zygote: import everything a run imports, then fork one child per request line
    ``IN<TAB>OUT``, answering each with the child's exit status.  It ignores Ctrl-C (its
    parent kills it when interrupted); a run takes Ctrl-C as the parent does."""
    _die_with_parent()
    on_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIG_IGN where the parent ignores it
    import torch._dynamo  # noqa: F401 - what the optimizers import on first use

    registry.names()  # every backend imported once, before any fork
    for line in sys.stdin:
        inp, out = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:  # the run: stdout is the parent's answer channel, so it goes to stderr
            code = 1
            try:
                _die_with_parent()
                signal.signal(signal.SIGINT, on_int)
                os.dup2(2, 1)
                _child(Path(inp), Path(out))
                code = 0
            except KeyboardInterrupt:
                pass
            except BaseException:  # noqa: BLE001 - reported by the exit status
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"{os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


def _backend_class(name: str) -> type | None:
    try:
        return registry.get(name)
    except KeyError:
        return None  # the child reports the unknown backend as the run's error


def _importable(cls: type) -> bool:
    """Whether a fresh process can import ``cls`` by its module and name (pickle by reference)."""
    module = sys.modules.get(cls.__module__)
    return cls.__module__ != "__main__" and module is not None and getattr(module, cls.__qualname__, None) is cls


def _exit_reason(code: int) -> str:
    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in {s.value for s in signal.Signals} else str(sig)
        hint = ": the kernel's OOM killer sends SIGKILL" if sig == signal.SIGKILL else ""
        return f"signal {name}{hint}"
    return f"exit code {code}"


def _own_peak(result: TrainResult) -> TrainResult:
    """The result labelled as this fresh process's own peak."""
    if result.mem_method == "cpu-vmhwm-reset":  # reset at the start of training
        return dataclasses.replace(result, mem_method=METHOD)
    hwm = status_mb("VmHWM")  # no reset possible: this process's whole life, still only this run
    if hwm is not None:
        return dataclasses.replace(result, peak_mem_mb=hwm, mem_method=METHOD)
    return dataclasses.replace(result, mem_method=FALLBACK_METHOD)


def _child(inp: Path, out: Path) -> None:
    cfg, dataset, threads, cls, checkpoint = pickle.loads(inp.read_bytes())
    torch.set_num_threads(threads)
    if cls is not None:
        registry.register(cls, cfg.model, replace=True)  # the parent's backend, even one registered at run time
    msg: tuple[str, Any]
    try:
        msg = ("ok", _own_peak(train(cfg, dataset, checkpoint)))
    except Exception as exc:  # noqa: BLE001 - raised again in the parent
        exc.__traceback__ = None
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        msg = ("error", exc)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.rename(out)  # whole or absent


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        _child(Path(sys.argv[1]), Path(sys.argv[2]))
