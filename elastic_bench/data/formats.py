"""Loaders for the formats users have, all ending in a :class:`SequenceDataset`.

Formats (``--format``, or detected from the file):

- ``seq``: the common sequence text format, one user per line, ``user item item ...``,
  items already chronological and dense from 1 (the S3Rec, ICLRec and DiffuRec files;
  not SASRec's one ``user item`` pair per line).
- ``movielens``: raw MovieLens ratings: ML-1M/10M ``ratings.dat`` (``u::i::r::t``),
  ML-100K ``u.data`` (tab-separated ``u i r t``), ML-20M/25M/32M ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``).
- ``table``: any CSV / TSV / Parquet with user, item and timestamp columns named by
  ``user_col``, ``item_col``, ``time_col``.

Raw formats (``movielens``, ``table``) are turned into sequences the same way: exact
duplicate rows dropped, each user's interactions sorted by time with ties broken by the
original item id (so the order never depends on the file's row order), optionally
k-core filtered, then users and items re-indexed densely from 1 in the order of their
original ids.  Every malformed input is a :class:`DataFormatError` naming the file and
line.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = ("auto", "seq", "movielens", "table")
CACHE_VERSION = 1  # bump when preprocessing changes, so that old caches are not reused


class DataFormatError(ValueError):
    """Malformed input: the message names the file and, where it can, the line."""


@dataclass
class SequenceDataset:
    """Chronological item sequences (ids 1..n_items; 0 is padding), one per user."""

    name: str
    sequences: list[np.ndarray]
    n_items: int
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def stats(self) -> dict:
        lengths = np.array([len(s) for s in self.sequences])
        n_inter = int(lengths.sum())
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "len_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "len_median": float(np.median(lengths)) if len(lengths) else 0.0,
            "len_max": int(lengths.max()) if len(lengths) else 0,
            "density": n_inter / max(1, self.n_users * self.n_items),
        }

    def item_counts(self) -> np.ndarray:
        """Interactions per item id (index 0 = padding, always 0)."""
        return np.bincount(np.concatenate(self.sequences), minlength=self.n_items + 1) if self.sequences else np.zeros(1)


def _decode(path: Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped); a DataFormatError naming the line otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        pos = bom + exc.start
        line = data[:pos].count(b"\n") + 1
        raise DataFormatError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {pos}); re-encode the file as UTF-8") from None


def _read_text(path: Path) -> list[str]:
    # split on newlines only (str.splitlines also splits on \x0b, \x1c, U+2028, ...), so that
    # line numbers in messages match an editor's
    return [ln.rstrip("\r") for ln in _decode(path).split("\n")]


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def load_seq(path: Path, min_len: int = 2) -> SequenceDataset:
    """The common ``user item item ...`` format."""
    lines = _read_text(path)
    seqs: dict[int, np.ndarray] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        tokens = line.split()
        bad = next((t for t in tokens if not _is_int(t)), None)
        if bad is not None:
            header = not seqs and not _is_int(tokens[0])  # first non-blank line, starting with a word
            what = "a header line (this format has none)" if header else f"a non-integer id {bad!r}"
            raise DataFormatError(f"{path}:{no}: {what}; expected 'user item item ...' with integer ids")
        ids = [int(t) for t in tokens]
        user, items = ids[0], ids[1:]
        if len(items) < min_len:
            raise DataFormatError(f"{path}:{no}: user {user} has {len(items)} item(s); at least {min_len} needed (drop or filter such users)")
        if min(items) < 1:
            raise DataFormatError(f"{path}:{no}: item id {min(items)} < 1 (ids start at 1; 0 is padding)")
        if user in seqs:
            raise DataFormatError(f"{path}:{no}: user {user} appears on two lines")
        seqs[user] = np.asarray(items, dtype=np.int64)
    if not seqs:
        raise DataFormatError(f"{path}: empty file (no user lines)")
    n_items = int(max(int(s.max()) for s in seqs.values()))
    return SequenceDataset(path.stem, [seqs[u] for u in sorted(seqs)], n_items, str(path))


def _parse_rows(path: Path, lines: list[str], sep: str, header: bool, ncols: int) -> np.ndarray:
    rows = []
    start = 0
    if header:  # skip the header: the first non-blank line
        start = next(i for i, ln in enumerate(lines) if ln.strip()) + 1
    for no, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != ncols:
            raise DataFormatError(f"{path}:{no}: expected {ncols} fields separated by {sep!r}, got {len(parts)}")
        try:
            rows.append((int(parts[0]), int(parts[1]), int(float(parts[3]))))
        except ValueError:
            raise DataFormatError(f"{path}:{no}: non-numeric user, item or timestamp in {line.strip()!r}") from None
    if not rows:
        raise DataFormatError(f"{path}: empty file (no rating lines)")
    return np.asarray(rows, dtype=np.int64)


def load_movielens(path: Path) -> np.ndarray:
    """``[n, 3]`` (user, item, timestamp) rows of a raw MovieLens ratings file."""
    lines = _read_text(path)
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise DataFormatError(f"{path}: empty file")
    if "::" in first:
        return _parse_rows(path, lines, "::", header=False, ncols=4)
    if "\t" in first:
        return _parse_rows(path, lines, "\t", header=False, ncols=4)
    if "," in first:
        header = not first.split(",")[0].strip().lstrip("-").isdigit()
        return _parse_rows(path, lines, ",", header=header, ncols=4)
    raise DataFormatError(f"{path}:1: not a MovieLens ratings file (expected '::', tab or comma separated 'user item rating timestamp')")


def _column_values(df, col: str, is_time: bool):
    """(int64 values, bad-row mask) of one column: integer ids; times as numbers or dates (epoch s)."""
    import pandas as pd

    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    if is_time and raw.dtype.kind not in "iufb" and num.notna().sum() < raw.notna().sum():
        dates = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
        if dates.notna().sum() > num.notna().sum():  # mostly dates: epoch seconds, any resolution
            bad = dates.isna().to_numpy()
            secs = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            return np.where(bad, 0, secs.fillna(0).to_numpy()).astype(np.int64), bad
    if num.dtype.kind in "iu":  # exact, also for ids beyond float64's 2**53
        return num.to_numpy().astype(np.int64), np.zeros(len(num), dtype=bool)
    values = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if not is_time:
        bad |= np.where(bad, False, values != np.floor(np.where(bad, 0, values)))  # fractional ids
    return np.where(bad, 0, values).astype(np.int64), bad


def load_table(path: Path, user_col: str = "user", item_col: str = "item", time_col: str = "timestamp", sep: str | None = None) -> np.ndarray:
    """``[n, 3]`` (user, item, timestamp) rows of a CSV / TSV / Parquet table with named columns."""
    import io

    import pandas as pd

    line_of = None  # data row -> line number in the file (text tables)
    if path.suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise DataFormatError(f"{path}: reading Parquet needs pyarrow ({exc})") from None
        except Exception as exc:  # pyarrow's errors for a corrupt or truncated file
            raise DataFormatError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    else:
        text = _decode(path)
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep or ("\t" if path.suffix in (".tsv", ".tab") else ","))
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise DataFormatError(f"{path}: {str(exc).splitlines()[0]}") from None
        nonblank = [no for no, ln in enumerate(text.split("\n"), 1) if ln.strip()]
        line_of = nonblank[1:]  # pandas skips blank lines; the first non-blank one is the header
    header_line = f"{nonblank[0]}:" if line_of is not None else ""
    missing = [c for c in (user_col, item_col, time_col) if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}:{header_line} no column {', '.join(map(repr, missing))}; columns are {', '.join(map(str, df.columns))} (set --user-col/--item-col/--time-col)")
    if df.empty:
        raise DataFormatError(f"{path}: empty table")
    out = np.empty((len(df), 3), dtype=np.int64)
    for j, col in enumerate((user_col, item_col, time_col)):
        values, bad = _column_values(df, col, col == time_col)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            where = f"{line_of[row]}:" if line_of is not None and row < len(line_of) else f" row {row + 1}:"
            kind = "a date or number" if col == time_col else "an integer id"
            raise DataFormatError(f"{path}:{where} column {col!r} has {df[col].iloc[row]!r}, not {kind}")
        out[:, j] = values
    return out


def kcore(rows: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Drop users with < ``min_user`` and items with < ``min_item`` interactions, until stable."""
    while True:
        keep = np.ones(len(rows), dtype=bool)
        if min_user > 1:
            users, inv, counts = np.unique(rows[:, 0], return_inverse=True, return_counts=True)
            keep &= counts[inv] >= min_user
        if min_item > 1:
            items, inv, counts = np.unique(rows[:, 1], return_inverse=True, return_counts=True)
            keep &= counts[inv] >= min_item
        if keep.all():
            return rows
        rows = rows[keep]


def sequences_from_rows(rows: np.ndarray, name: str, source: str, min_user: int = 0, min_item: int = 0, min_len: int = 2) -> SequenceDataset:
    """(user, item, timestamp) rows -> time-ordered, densely re-indexed sequences."""
    rows = np.unique(rows, axis=0)  # exact duplicates dropped; also sorts by (user, item, time)
    rows = kcore(rows, min_user, min_item)
    if not len(rows):
        raise DataFormatError(f"{source}: no interactions left after filtering (min {min_user} per user, {min_item} per item)")
    # per user by time, ties by original item id: lexsort keys are last-major
    rows = rows[np.lexsort((rows[:, 1], rows[:, 2], rows[:, 0]))]
    item_ids, dense_items = np.unique(rows[:, 1], return_inverse=True)
    users, starts = np.unique(rows[:, 0], return_index=True)
    dense = dense_items.astype(np.int64) + 1
    bounds = list(starts[1:]) + [len(rows)]
    seqs = [dense[a:b] for a, b in zip(starts, bounds)]
    short = [u for u, s in zip(users, seqs) if len(s) < min_len]
    if short:
        raise DataFormatError(
            f"{source}: {len(short)} user(s) have fewer than {min_len} interactions (e.g. user {short[0]}); "
            "filter them with --min-user-items"
        )
    meta = {"rows": int(len(rows))}
    return SequenceDataset(name, seqs, int(len(item_ids)), source, meta)


def detect_format(path: Path) -> str:
    if path.suffix in (".parquet", ".tsv", ".tab") or path.name.endswith(".csv") and path.name != "ratings.csv":
        return "table"
    if path.name in ("ratings.dat", "u.data", "ratings.csv"):
        return "movielens"
    try:
        with path.open("rb") as fh:
            first = fh.readline().decode("utf-8", errors="replace")
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if "::" in first:
        return "movielens"
    return "seq"


@dataclass(frozen=True)
class LoadOptions:
    """How a file is read and preprocessed; hashed into the cache key."""

    fmt: str = "auto"
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = "timestamp"
    min_user_items: int = 0
    min_item_users: int = 0

    def key(self) -> str:
        return json.dumps({**self.__dict__, "cache_version": CACHE_VERSION}, sort_keys=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(path: str | Path, options: LoadOptions = LoadOptions(), cache_dir: str | Path | None = None, name: str | None = None) -> SequenceDataset:
    """Load any supported file; raw formats are cached (``.npz``) under ``cache_dir`` keyed by a
    hash of the file's bytes and ``options``."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    fmt = detect_format(path) if options.fmt == "auto" else options.fmt
    if fmt not in FORMATS:
        raise DataFormatError(f"--format {fmt}: accepted: {', '.join(FORMATS)}")
    name = name or path.stem
    if fmt == "seq" and not (options.min_user_items or options.min_item_users):
        ds = load_seq(path)
        ds.name = name
        return ds
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256((_file_digest(path) + fmt + options.key()).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{path.stem}-{digest}.npz"
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    items, offsets, n_items = z["items"].astype(np.int64), z["offsets"], int(z["n_items"])
                seqs = np.split(items, offsets[1:-1])
                return SequenceDataset(name, list(seqs), n_items, str(path), {"cache": str(cache)})
            except Exception:  # corrupt or partial cache file: rebuild it below
                pass
    if fmt == "seq":
        base = load_seq(path, min_len=1)
        rows = np.concatenate([np.stack([np.full(len(s), u), s, np.arange(len(s))], 1) for u, s in enumerate(base.sequences)])
    elif fmt == "movielens":
        rows = load_movielens(path)
    else:
        rows = load_table(path, options.user_col, options.item_col, options.time_col)
    ds = sequences_from_rows(rows, name, str(path), options.min_user_items, options.min_item_users)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(s) for s in ds.sequences])
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")  # one per process: concurrent writers
        np.savez(tmp, items=np.concatenate(ds.sequences), offsets=offsets, n_items=ds.n_items)
        tmp.replace(cache)
        ds.meta["cache"] = str(cache)
    return ds
