"""CPU peak memory of a training run is the run's own: the RSS meter (high-water mark reset),
and accuracy cells that train in fresh processes, so that no cell inherits another's peak and
the sweep process's own memory does not count."""

from __future__ import annotations

import dataclasses
import pickle
import signal

import numpy as np
import pytest

from elastic_bench import registry
from elastic_bench.runs.accuracy import run_accuracy_sweep
from elastic_bench.runs.accuracy_spec import accuracy_spec
from elastic_bench.data.resolve import load_dataset
from elastic_bench.train.config import TrainConfig
from elastic_bench.train.isolated import Zygote, _child, _exit_reason, _importable
from elastic_bench.train.rss import RssMeter, maxrss_mb, reset_peak, status_mb

DATA = "synthetic:n_users=60,n_items=40,lengths=uniform:6..10,seed=3"
MB = 2**20

needs_proc = pytest.mark.skipif(status_mb("VmHWM") is None, reason="no /proc/self/status (Linux only)")


def _touch(mb: int) -> np.ndarray:
    return np.ones(mb * MB // 8)  # written, so resident


@needs_proc
def test_rss_meter_reads_the_peak_since_it_started_not_the_processes():
    big = _touch(300)
    before = maxrss_mb()  # the process's cumulative mark: what CPU rows used to report
    del big
    if not reset_peak():
        pytest.skip("/proc/self/clear_refs is not writable here")
    meter = RssMeter()
    small = _touch(20)
    peak, method = meter.read()
    assert method == "cpu-vmhwm-reset"
    assert peak >= status_mb("VmRSS") - 1 and small.sum() > 0
    assert peak < before - 200, (peak, before)  # the freed 300 MB are not this run's


def _two_cells(tmp_path, **kw):
    """A 1M-slot memory bank (hundreds of MB), then no bank: two cells of one sweep process."""
    return accuracy_spec(models="elastic", experts="4", memory_size="1m,0", seeds="0", data=DATA, epochs=1, d_model="16", max_len="16",
                         device="cpu", out=str(tmp_path / "acc.csv"), plot=False, **kw)  # fmt: skip


@needs_proc
def test_second_cell_trained_in_the_same_process_does_not_inherit_the_first_cells_peak(tmp_path):
    spec = dataclasses.replace(_two_cells(tmp_path), isolate=False)  # both cells in this process
    res = run_accuracy_sweep(spec, progress=False)
    big, small = res.rows
    assert (big["status"], small["status"]) == ("ok", "ok") and (big["memory_size"], small["memory_size"]) == (1024 * 1024, 0)
    if {big["mem_method"], small["mem_method"]} != {"cpu-vmhwm-reset"}:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert big["peak_mem_mb"] > small["peak_mem_mb"] + 200, (big["peak_mem_mb"], small["peak_mem_mb"])


@needs_proc
def test_an_isolated_cells_peak_excludes_the_sweep_processes_memory(tmp_path):
    # the sweep process holds 1 GB: a child's ru_maxrss would include it (Linux carries the parent's
    # mark across fork + exec), and so would an in-process reading; the cell's own peak does not
    held = _touch(1024)
    spec = dataclasses.replace(_two_cells(tmp_path), option_axes=(("experts", (4,)), ("memory_size", (0,))))
    (row,) = run_accuracy_sweep(spec, progress=False).rows
    assert row["status"] == "ok" and row["mem_method"] == "cpu-rss-subprocess"
    assert 50 < row["peak_mem_mb"] < 1024 and held.sum() > 0, row["peak_mem_mb"]


def test_an_isolated_runs_error_comes_back_with_its_type(tmp_path):
    # the child's side, run here: the error is pickled whole (train_isolated raises it again)
    cfg = TrainConfig(model="elastic", data=DATA, epochs=1, d_model=16, max_len=16, device="cpu", objective="all")
    inp, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    inp.write_bytes(pickle.dumps((cfg, load_dataset(DATA, None), 1, registry.get("elastic"), None)))  # + checkpoint
    _child(inp, out)
    kind, exc = pickle.loads(out.read_bytes())
    assert kind == "error" and isinstance(exc, ValueError) and "causal" in str(exc)


class _Die:
    """Unpickling it kills the process that unpickles it."""

    def __reduce__(self):
        return (signal.raise_signal, (signal.SIGKILL,))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL")
def test_a_run_that_dies_is_reported_and_the_zygote_goes_on(tmp_path):
    inp, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    inp.write_bytes(pickle.dumps(_Die()))
    code = Zygote.shared().run(inp, out)
    assert code == -signal.SIGKILL and not out.exists() and "OOM killer" in _exit_reason(code)
    assert Zygote.shared().run(tmp_path / "missing.pkl", out) == 1 and not out.exists()  # still answering


def test_a_backend_defined_in_a_function_is_not_importable_by_a_fresh_process():
    class Local(registry.get("softmax")):
        pass

    assert _importable(registry.get("softmax")) and not _importable(Local)
    assert not _importable(dataclasses.make_dataclass("X", []))
