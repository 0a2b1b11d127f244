"""Headline cells: timed again in fresh processes, interleaved, and pooled into one row.

One process measuring one cell sees one build of the model, one memory layout and one
state of the machine; consecutive runs of the same configuration moved by 30 % on a busy
CPU.  So the cells that decide a claim (the *headline* cells: every cell at the sweep's
longest sequence length, where speed-ups and memory savings are judged) are measured
``process_repeats`` times (default 3) in interleaved rounds — every headline cell once, then
every one again — and each round runs in a new process (``spawn``: a cold interpreter, a new
allocator), so that a drift of the machine hits all cells alike and no two repeats of a
cell share a process.  (One process per round, not per cell: a spawn with torch's import
costs seconds, which would dominate a short sweep.)

The row of a headline cell pools its repeats:

- ``latency_samples_ms`` keeps every sample, ``;`` within a repeat and ``|`` between
  repeats; ``latency_ms_p50/p20/p80`` are quantiles of the pooled samples, and
  ``latency_ms_ci_lo/hi`` the 95 % cluster-bootstrap interval of the median
  (:func:`~elastic_bench.bench.bootstrap.median_ci`), which covers process-to-process
  spread as well as jitter;
- ``n_samples`` is the total and ``n_repeats`` the number of processes;
- memory, FLOPs and the gate come from the first repeat (they do not vary by process);
- a repeat that did not end ``ok`` (OOM, error, incorrect) makes the row that repeat's.

Finished repeats are appended (fsync'ed) to ``<out>.repeats.jsonl`` beside the results
CSV, so an interrupted sweep resumes with the repeats it still lacks; the pooled row goes
to the CSV when the last repeat ends, and the cell's lines leave the side file's meaning
(the CSV row supersedes them).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable

from .bootstrap import median_ci, parse_samples
from .cells import Cell
from .timer import quantile

DEFAULT_PROCESS_REPEATS = 3


def headline(cells: Iterable[Cell]) -> list[Cell]:
    """The cells at the longest sequence length of the grid (where the claims are judged)."""
    cells = list(cells)
    if not cells:
        return []
    longest = max(c.seq_len for c in cells)
    return [c for c in cells if c.seq_len == longest]


def format_samples(groups: list[list[float]]) -> str:
    """``[[1.0, 1.1], [1.2]]`` -> ``"1.0;1.1|1.2"`` (4 significant digits)."""
    return "|".join(";".join(f"{v:.4g}" for v in g) for g in groups if g)


def timing_fields(groups: list[list[float]]) -> dict[str, Any]:
    """The latency columns of a row from its samples, one list per process repeat."""
    pooled = sorted(v for g in groups for v in g)
    if not pooled:
        return {}
    text = format_samples(groups)
    samples, ids = parse_samples(text)
    lo, hi = median_ci(samples, ids)
    return {
        "latency_ms_p50": statistics.median(pooled),
        "latency_ms_p20": quantile(pooled, 0.2),
        "latency_ms_p80": quantile(pooled, 0.8),
        "latency_ms_ci_lo": lo,
        "latency_ms_ci_hi": hi,
        "latency_samples_ms": text,
        "n_samples": len(pooled),
        "n_repeats": sum(1 for g in groups if g),
    }


def pool_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of a cell's repeats (module docstring)."""
    for r in rows:
        if r.get("status") != "ok":
            return {**r, "n_repeats": len(rows)}
    groups = [[float(v) for v in str(r.get("latency_samples_ms") or "").replace("|", ";").split(";") if v] for r in rows]
    first = rows[0]
    out = {**first, **timing_fields(groups), "wall_s": round(sum(float(r.get("wall_s") or 0) for r in rows), 3)}
    if out.get("latency_ms_p50"):
        out["tokens_per_s"] = first["batch"] * first["seq_len"] / (out["latency_ms_p50"] / 1e3)
    return out


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

    def append(self, key: str, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"config_hash": key, "row": row}, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def isolated_task(payload: tuple[Any, Cell, str]) -> dict[str, Any]:
    """``(spec, cell, run_id)`` -> the cell's row, measured by a new engine in this process."""
    import torch

    from ..environment import environment
    from .sweep import Engine, measure_row

    spec, cell, run_id = payload
    if spec.threads and spec.device_type == "cpu":
        torch.set_num_threads(spec.threads)
    return measure_row(Engine(spec), cell, run_id, environment(spec.device_type))


class ProcessPerRound:
    """Runs :func:`isolated_task` in one ``spawn``-ed worker per round (a new one when the
    round changes); use as a context manager so the last worker is closed."""

    def __init__(self) -> None:
        self.round: int | None = None
        self.pool: Any = None

    def measure(self, payload: tuple[Any, Cell, str], rnd: int) -> dict[str, Any]:
        if rnd != self.round:
            self.close()
            self.pool = multiprocessing.get_context("spawn").Pool(1)
            self.round = rnd
        return self.pool.apply(isolated_task, (payload,))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None
        self.round = None

    def __enter__(self) -> "ProcessPerRound":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None and self.pool is not None:
            self.pool.terminate()
        self.close()


def interleaved(
    cells: list[Cell],
    repeats: int,
    measure: Callable[[Cell, int], dict[str, Any]],
    log: RepeatLog,
    on_repeat: Callable[[Cell, int], None] = lambda c, r: None,
) -> Iterable[tuple[Cell, dict[str, Any]]]:
    """Measure every cell ``repeats`` times, round by round; yield ``(cell, pooled row)`` as
    each cell gets its last repeat (or fails).  Repeats already in ``log`` are not rerun."""
    done = log.load()
    have = {c.config_hash(): list(done.get(c.config_hash(), [])) for c in cells}
    finished: set[str] = set()
    for rnd in range(repeats):
        for cell in cells:
            key = cell.config_hash()
            if key in finished:
                continue
            rows = have[key]
            if len(rows) <= rnd:
                on_repeat(cell, rnd)
                row = measure(cell, rnd)
                log.append(key, row)
                rows.append(row)
            if rows[-1].get("status") != "ok" or len(rows) >= repeats:
                finished.add(key)
                yield cell, pool_rows(rows[:repeats])
