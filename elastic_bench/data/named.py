"""Named datasets, resolved under a data directory the user points to.

The files are never shipped with elastic-bench (their licences forbid redistribution):
``--data-dir DIR`` or the ``ELASTIC_BENCH_DATA`` environment variable names the folder
that holds them, laid out as below (the layout of the common public snapshots).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "ELASTIC_BENCH_DATA"


@dataclass(frozen=True)
class NamedDataset:
    name: str
    relpath: str  # under the data directory
    fmt: str  # the loader format
    description: str


NAMED: dict[str, NamedDataset] = {
    d.name: d
    for d in (
        NamedDataset("ml-1m", "ml-1m/ml-1m.txt", "seq", "MovieLens 1M, 6,040 users, 3,706 items, sequence format"),
        NamedDataset("beauty", "amazon-beauty/Beauty.txt", "seq", "Amazon Beauty (S3Rec 5-core), 22,363 users, 12,101 items"),
        NamedDataset("sports", "amazon-sports/Sports_and_Outdoors.txt", "seq", "Amazon Sports and Outdoors (S3Rec 5-core), 35,598 users, 18,357 items"),
    )
}


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """``--data-dir`` if given, else ``$ELASTIC_BENCH_DATA``, else None."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else None


def resolve(name: str, explicit_dir: str | os.PathLike | None = None) -> Path:
    """Path of named dataset ``name``; a ValueError saying how to point elastic-bench at it."""
    if name not in NAMED:
        raise ValueError(f"unknown dataset {name!r}; named datasets: {', '.join(NAMED)} (or give a file path)")
    root = data_dir(explicit_dir)
    if root is None:
        raise ValueError(f"dataset {name!r}: no data directory; pass --data-dir DIR or set {ENV_VAR}")
    path = root / NAMED[name].relpath
    if not root.is_dir():
        raise ValueError(f"dataset {name!r}: data directory {root} does not exist (from --data-dir or {ENV_VAR})")
    if not path.is_file():
        raise ValueError(f"dataset {name!r}: {path} not found (expected layout DIR/{NAMED[name].relpath})")
    return path
