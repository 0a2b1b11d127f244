"""Headline cells: timed again in fresh processes, interleaved, and pooled into one row.

One process measuring one cell sees one build of the model, one memory layout and one
state of the machine; consecutive runs of the same configuration moved by 30 % on a busy
CPU.  So the cells that decide a claim (the *headline* cells: every cell at the sweep's
longest sequence length, where speed-ups and memory savings are judged) are measured
``process_repeats`` times (default 3) in interleaved rounds — every headline cell once, then
every one again — and each round runs in a new process (a cold interpreter, a new
allocator), so that a drift of the machine hits all cells alike and no two repeats of a
cell share a process.  Each round starts one cell later than the one before (round r runs
the cells from the r-th on, then the first ones), so no cell is always the first of its
process.  (One process per round, not per cell: a spawn with torch's import
costs seconds, which would dominate a short sweep.)

The row of a headline cell pools its repeats:

- ``latency_samples_ms`` keeps every sample, ``;`` within a repeat and ``|`` between
  repeats; ``latency_ms_p50/p20/p80/p99`` are quantiles of the pooled samples, and
  ``latency_ms_ci_lo/hi`` the 95 % cluster-bootstrap interval of the median
  (:func:`~elastic_bench.measure.bootstrap.median_ci`), which covers process-to-process
  spread as well as jitter;
- ``n_samples`` is the total and ``n_repeats`` the number of processes;
- memory, FLOPs and the gate come from the first repeat (they do not vary by process);
- a repeat that did not end ``ok`` (OOM, error, incorrect) makes the row that repeat's.

Finished repeats are appended (fsync'ed) to ``<out>.repeats.jsonl`` beside the results
CSV, so an interrupted sweep resumes with the repeats it still lacks; the pooled row goes
to the CSV when the last repeat ends, and then the cell's lines leave the side file.
``--no-resume`` forgets a cell's logged repeats and ``--retry-errors`` its failed ones.
Every repeat's row carries the sweep process's environment (one ``git_sha`` per run).

With ``interleave_calls`` (``--interleave-calls``), each round times its headline cells not one
after the other but **call by call together**, in groups of the cells that share a workload
shape (:func:`interleave_groups`: everything but the model and its options), in one process
(:meth:`~elastic_bench.measure.engine.Engine.measure_group`).  Every cell of a group then has the
same number of samples in every round, sample ``i`` of each taken in the same cycle of calls, so
two rows of one group pair sample by sample (:func:`~elastic_bench.measure.bootstrap.paired_ratio_ci`).
A group's rows of one round are logged together, so a resumed sweep never pairs a round of one
cell with a different round of another.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from ..measure.bootstrap import INTERLEAVED_MODE
from ..measure.cell import Cell
from ..measure.engine import Engine, base_row, measure_row, measure_rows_interleaved
from ..measure.samples import pool_rows

DEFAULT_PROCESS_REPEATS = 3


def headline(cells: Iterable[Cell]) -> list[Cell]:
    """The cells at the longest sequence length of the grid (where the claims are judged)."""
    cells = list(cells)
    if not cells:
        return []
    longest = max(c.seq_len for c in cells)
    return [c for c in cells if c.seq_len == longest]


class RepeatLog:
    """The side file of finished repeats: one JSON line per repeat, fsync'ed."""

    def __init__(self, out: str | Path):
        self.path = Path(str(out) + ".repeats.jsonl")

    def load(self) -> dict[str, list[dict[str, Any]]]:
        done: dict[str, list[dict[str, Any]]] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a hard kill
            done.setdefault(rec["config_hash"], []).append(rec["row"])
        return done

    def keep(self, wanted: Callable[[str, dict[str, Any]], bool]) -> None:
        """Rewrite the file with only the lines ``wanted(config_hash, row)`` accepts (atomically:
        a temporary file, then a rename); nothing to do when the file does not exist."""
        if not self.path.exists():
            return
        lines = [
            json.dumps({"config_hash": key, "row": row}, default=str)
            for key, rows in self.load().items()
            for row in rows
            if wanted(key, row)
        ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)

    def forget(self, keys: set[str]) -> None:
        """Drop every line of these cells (their pooled row is in the CSV, or they are rerun)."""
        self.keep(lambda key, row: key not in keys)

    def append(self, key: str, row: dict[str, Any]) -> None:
        self.append_many([(key, row)])

    def append_many(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Append ``(config_hash, row)`` lines in one write (a group's round: all or, after a hard
        kill, a cut last line that :meth:`load` skips)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({"config_hash": key, "row": row}, default=str) + "\n" for key, row in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def isolated_task(payload: tuple[Any, Cell, str, dict[str, str]]) -> dict[str, Any]:
    """``(spec, cell, run_id, env)`` -> the cell's row, measured by a new engine in this process.
    ``env`` is the sweep's (:func:`~elastic_bench.environment.environment` of the parent), so
    every row of one run carries the same provenance, ``git_sha`` included."""
    spec, cell, run_id, env = payload
    return measure_row(_worker_engine(spec), cell, run_id, env)


def isolated_group_task(payload: tuple[Any, list[Cell], str, dict[str, str]]) -> list[dict[str, Any]]:
    """``(spec, cells, run_id, env)`` -> the cells' rows, their passes timed together
    (:func:`~elastic_bench.measure.engine.measure_rows_interleaved`) by a new engine in this process."""
    spec, cells, run_id, env = payload
    return measure_rows_interleaved(_worker_engine(spec), list(cells), run_id, env)


def _worker_engine(spec: Any) -> Engine:
    """A new engine in a worker process, on the sweep's CPU thread count."""
    import torch

    if spec.threads and spec.device_type == "cpu":
        torch.set_num_threads(spec.threads)
    return Engine(spec)


def timing_group(run_id: str, rnd: int, cells: Iterable[Cell]) -> str:
    """The token of one group's round timed together: its run, its round and its members (the
    ``timing_group`` column; a pooled row joins its rounds' tokens with ``|``).  Two rows pair
    sample by sample only when their tokens are equal, round for round
    (:func:`~elastic_bench.measure.bootstrap.paired_rows`)."""
    members = hashlib.sha1(",".join(sorted(c.config_hash() for c in cells)).encode()).hexdigest()[:10]
    return f"{run_id}/r{rnd}/{members}"


def interleave_groups(cells: Iterable[Cell]) -> list[list[Cell]]:
    """The cells that are timed together with ``interleave_calls``: those with one workload
    shape (pass, objective, loss, batch, N, dtype, level, width, depth, heads, catalogue,
    padding, dropout, seed, device), whatever their model, options and causality; in the
    order of their first cell."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        key = (c.pass_, c.objective, c.loss, c.batch, c.seq_len, c.dtype, c.level, c.d_model, c.layers, c.heads,
               c.n_items, c.padding, c.dropout, c.seed, c.device, c.threads)  # fmt: skip
        groups.setdefault(key, []).append(c)
    return list(groups.values())


class ProcessPerRound:
    """Runs :func:`isolated_task` in one fresh worker process per round (a new one when the
    round changes); use as a context manager so the last worker is closed.

    The worker is ``python -m elastic_bench.runs.repeats`` talking pickles over its stdin and
    stdout, not :mod:`multiprocessing`: a ``spawn`` start re-imports the caller's ``__main__``,
    which re-runs a user's script that has no ``if __name__ == "__main__"`` guard."""

    def __init__(self) -> None:
        self.round: int | None = None
        self.proc: subprocess.Popen | None = None

    def measure(self, payload: tuple[Any, Any, str, dict[str, str]], rnd: int) -> Any:
        """The row of ``payload``'s cell; with a list of cells, their rows, timed together."""
        if rnd != self.round or self.proc is None or self.proc.poll() is not None:
            self.close()
            self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.round = rnd
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            pickle.dump(payload, self.proc.stdin)
            self.proc.stdin.flush()
            return pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError) as exc:
            code = self.proc.wait()
            self.proc = None
            spec, cell, run_id, env = payload
            why = "killed (out of memory?)" if code in (-9, 137) else f"exit code {code}"
            lost = {"status": "error:worker-lost", "reason": f"repeat worker died: {why} ({type(exc).__name__})"}
            if isinstance(cell, list):
                return [{**cell_identity(c, run_id, env), **lost} for c in cell]
            return {**cell_identity(cell, run_id, env), **lost}

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the worker's loop ends
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.round = None

    def __enter__(self) -> "ProcessPerRound":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None and self.proc is not None:
            self.proc.kill()
        self.close()


def cell_identity(cell: Cell, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    """The row fields of ``cell`` that need no measurement (a row for a lost worker)."""
    return base_row(cell, run_id, env, None)


def _serve() -> None:
    """The worker loop: read a pickled payload, write the pickled row, until EOF.  The
    protocol owns the real stdout; anything else printed goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    while True:
        try:
            payload = pickle.load(inp)
        except EOFError:
            return
        task = isolated_group_task if isinstance(payload[1], list) else isolated_task
        pickle.dump(task(payload), out)
        out.flush()


def interleaved(
    cells: list[Cell],
    repeats: int,
    measure: Callable[[Cell, int], dict[str, Any]],
    log: RepeatLog,
    on_repeat: Callable[[Cell, int], None] = lambda c, r: None,
    resume: bool = True,
    retry_errors: bool = False,
    measure_group: Callable[[list[Cell], int], list[dict[str, Any]]] | None = None,
) -> Iterable[tuple[Cell, dict[str, Any]]]:
    """Measure every cell ``repeats`` times, round by round; yield ``(cell, pooled row)`` as
    each cell gets its last repeat (or fails).  Repeats already in ``log`` are not rerun unless
    ``resume`` is off (``--no-resume``: every repeat again) or, for a logged repeat that did not
    end ``ok``, ``retry_errors`` is on.  Once the consumer has taken a cell's pooled row (and
    appended it to the CSV), the cell's lines leave the log.

    With ``measure_group`` (``interleave_calls``), the cells of each :func:`interleave_groups`
    group that still need a round are measured together by one call, and their rows logged
    together; a group whose cells' logged rounds differ in number, or were timed one cell after
    the other (a sweep that ran without interleaving before), is measured again from its first
    round, so that its rounds pair."""
    keys = {c.config_hash() for c in cells}
    if not resume:
        log.forget(keys)
    elif retry_errors:
        log.keep(lambda key, row: key not in keys or row.get("status") == "ok")
    done = log.load()
    have = {c.config_hash(): list(done.get(c.config_hash(), [])) for c in cells}
    groups = interleave_groups(cells) if measure_group is not None else [[c] for c in cells]
    if measure_group is not None:
        for group in groups:
            counts = {len(have[c.config_hash()]) for c in group}
            rows = [r for c in group for r in have[c.config_hash()]]
            sequential = any(r.get("status") == "ok" and not str(r.get("timer_mode") or "").endswith(INTERLEAVED_MODE) for r in rows)
            if len(counts) > 1 or sequential:  # rounds that do not pair: start the group again
                log.forget({c.config_hash() for c in group})
                for c in group:
                    have[c.config_hash()] = []
    finished: set[str] = set()
    for rnd in range(repeats):
        shift = rnd % len(groups) if groups else 0
        for group in groups[shift:] + groups[:shift]:  # each round starts one group later: no group is always first in its process
            todo = [c for c in group if c.config_hash() not in finished and len(have[c.config_hash()]) <= rnd]
            if todo:
                for c in todo:
                    on_repeat(c, rnd)
                rows = measure_group(todo, rnd) if measure_group is not None else [measure(c, rnd) for c in todo]
                log.append_many([(c.config_hash(), row) for c, row in zip(todo, rows)])
                for c, row in zip(todo, rows):
                    have[c.config_hash()].append(row)
            for cell in group:
                key = cell.config_hash()
                if key in finished:
                    continue
                got = have[key]
                if got and (got[-1].get("status") != "ok" or len(got) >= repeats):
                    finished.add(key)
                    yield cell, pool_rows(got[:repeats])
                    log.forget({key})  # reached only after the consumer took (appended) the row


if __name__ == "__main__":
    _serve()
