"""The results store: one tidy CSV row per measured cell, written so a crash loses nothing.

- :data:`COLUMNS` is the fixed, ordered schema (``tests/test_store.py`` checks it).
- Every row is one physical line (free text is flattened), appended with one ``write``,
  then ``flush`` and ``fsync``; SIGINT is held off while a row is written.  A truncated
  last line left by a hard kill (no trailing newline) is cut off the next time the file
  is opened for writing, and ignored when read.
- :meth:`ResultsStore.completed` maps ``config_hash`` -> status of the rows already there,
  which is what resumption skips.  A later row for the same hash supersedes an earlier one.

Example::

    >>> store = ResultsStore("results/sweep.csv")
    >>> store.check_schema()                 # before anything runs
    >>> store.append({"run_id": "...", "model": "softmax", ...})
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping

from .grammar import GrammarError

COLUMNS: tuple[str, ...] = (
    # provenance
    "run_id", "created_at", "git_sha", "host", "device", "device_name", "torch", "cuda", "triton",
    "backend_versions",
    # what was measured
    "task", "level", "model", "backend_detail", "options", "causal", "objective", "loss", "pass",
    "dtype", "precision", "batch", "seq_len", "d_model", "heads", "layers", "n_items", "experts", "memory_size",
    "topk", "padding", "dropout", "params", "flops", "flops_method",
    # outcome
    "status", "reason", "gate_dtype", "gate_max_err", "n_samples", "n_repeats", "timer_mode", "timing_group", "latency_ms_p50",
    "latency_ms_p20", "latency_ms_p80", "latency_ms_p99", "latency_ms_ci_lo", "latency_ms_ci_hi", "latency_samples_ms", "tokens_per_s", "peak_mem_mb", "act_mem_mb",
    "reserved_mem_mb", "mem_method", "state_bytes_per_user", "state_bytes_per_layer", "cpu_threads", "wall_s",
    # accuracy runs (empty for efficiency rows)
    "seed", "dataset", "hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50", "hr@200",
    "ndcg@200", "mrr@200",
    "config_hash",
)  # fmt: skip

NUMERIC_COLUMNS = (
    "batch", "seq_len", "d_model", "heads", "layers", "n_items", "experts", "memory_size", "topk",
    "dropout", "params", "flops", "gate_max_err", "n_samples", "n_repeats", "latency_ms_p50", "latency_ms_p20",
    "latency_ms_p80", "latency_ms_p99", "latency_ms_ci_lo", "latency_ms_ci_hi", "tokens_per_s", "peak_mem_mb", "act_mem_mb", "reserved_mem_mb",
    "state_bytes_per_user", "state_bytes_per_layer", "cpu_threads", "wall_s", "seed",
    "hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50", "hr@200", "ndcg@200", "mrr@200",
)  # fmt: skip


def is_final(status: str) -> bool:
    """Every written status is final for resumption (``--retry-errors`` reruns error/skipped)."""
    return bool(status)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(value)  # NaN -> empty
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def format_row(row: Mapping[str, Any]) -> str:
    """One CSV line (with its newline) in :data:`COLUMNS` order; unknown keys are an error."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not result columns: {', '.join(sorted(unknown))}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell_text(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def header_line() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
    return buf.getvalue()


@contextlib.contextmanager
def _sigint_deferred():
    """Hold a Ctrl-C until the block ends (main thread only), so a row is never half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(*pending[0])
        elif pending:
            raise KeyboardInterrupt


def read_lines(path: str | Path) -> tuple[list[str], list[list[str]], bool]:
    """(header, complete rows, whether a truncated last line was found) of a results CSV."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return [], [], False
    text = p.read_text(encoding="utf-8")
    truncated = not text.endswith("\n")
    lines = text.split("\n")
    lines = lines[:-1]  # the part after the last newline: '' or a truncated row
    if not lines:
        return [], [], truncated
    rows = list(csv.reader(lines))
    header = rows[0]
    good = [r for r in rows[1:] if len(r) == len(header)]
    return header, good, truncated


class ResultsStore:
    """Append-only CSV of result rows (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: io.TextIOWrapper | None = None

    def check_schema(self) -> None:
        """Refuse (``GrammarError``) an existing file whose header is not :data:`COLUMNS`, unless
        it is an older version of this schema (its columns a subset of ours: :meth:`open`
        upgrades it)."""
        header, _, _ = read_lines(self.path)
        if header and tuple(header) != COLUMNS and not self.upgradable(header):
            extra = sorted(set(header) - set(COLUMNS))
            raise GrammarError(
                f"--out: {self.path} has a different column set (unknown columns: {', '.join(extra[:5])}); accepted: a new file or one written by this version"
            )

    @staticmethod
    def upgradable(header: list[str]) -> bool:
        return bool(header) and "config_hash" in header and set(header) <= set(COLUMNS)

    def upgrade(self) -> bool:
        """Rewrite an older-schema file with :data:`COLUMNS` (new columns empty), atomically:
        a temporary file beside it, fsync'ed, then renamed over it.  True when it rewrote."""
        header, rows, _ = read_lines(self.path)
        if not header or tuple(header) == COLUMNS:
            return False
        tmp = self.path.with_name(self.path.name + ".upgrade.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(header_line())
            for r in rows:
                fh.write(format_row(dict(zip(header, r))))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return True

    def rows(self) -> list[dict[str, str]]:
        header, rows, _ = read_lines(self.path)
        return [dict(zip(header, r)) for r in rows]

    def completed(self) -> dict[str, str]:
        """``config_hash`` -> latest status of the complete rows already in the file."""
        done: dict[str, str] = {}
        for r in self.rows():
            if r.get("config_hash") and is_final(r.get("status", "")):
                done[r["config_hash"]] = r["status"]
        return done

    def open(self) -> None:
        """Open for appending: create with a header, or cut a truncated last line.  A curated
        (git-tracked) file is refused while the source tree is dirty (:mod:`elastic_bench.provenance`)."""
        from .provenance import DirtyTreeError, check_curated_write

        try:
            check_curated_write(self.path)
        except DirtyTreeError as exc:
            raise GrammarError(str(exc)) from None
        self.check_schema()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self.upgrade()
            with open(self.path, "rb+") as fh:
                data = fh.read()
                if not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        if new:
            self._write(header_line())

    def _write(self, text: str) -> None:
        assert self._fh is not None, "ResultsStore.open() first"
        with _sigint_deferred():
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def append(self, row: Mapping[str, Any]) -> None:
        self._write(format_row(row))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultsStore":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_results(paths: Iterable[str | Path] | str | Path):
    """A pandas DataFrame of one or more results CSVs: complete rows only, numeric columns
    converted, and for each ``config_hash`` only its latest row (a rerun supersedes)."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for p in paths:
        if not Path(p).is_file():
            raise GrammarError(f"results file {str(p)!r} does not exist; accepted: CSV files written by `elastic-bench sweep`")
        header, rows, _ = read_lines(p)
        if not header:
            continue
        missing = [c for c in ("model", "status", "config_hash") if c not in header]
        if missing:
            raise GrammarError(f"{p}: not an elastic-bench results CSV (no {', '.join(missing)} column)")
        frames.append(pd.DataFrame(rows, columns=header).assign(source=str(p)))
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS) + ["source"])
    df = pd.concat(frames, ignore_index=True)
    for c in NUMERIC_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
    for c in df.columns:
        if c not in NUMERIC_COLUMNS:
            df[c] = df[c].fillna("").astype(str)
    return df.drop_duplicates(subset=["config_hash"], keep="last").reset_index(drop=True)
