"""Curated results come from committed code: a guard against writing them from a dirty tree.

A *curated* result is a results CSV that git tracks (the committed runs under ``results/``,
added with ``git add -f``).  Appending rows to one while the source tree has uncommitted
changes would mix rows of code that no commit holds, under a ``git_sha`` ending in
``-dirty``.  :func:`check_curated_write` refuses that with a one-line error unless asked
(``--allow-dirty`` on the commands that write, or ``ELASTIC_BENCH_ALLOW_DIRTY=1``).
Changes under ``results/`` and ``reports/`` themselves are outputs, not source, and do not
count as dirty.  Outside a git checkout nothing is curated and nothing is refused.

Example::

    >>> check_curated_write("results/cpu-sweep-2026-11-27.csv")   # raises on a dirty tree
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ALLOW_DIRTY_ENV = "ELASTIC_BENCH_ALLOW_DIRTY"
OUTPUT_DIRS = ("results/", "reports/")


class DirtyTreeError(ValueError):
    """A curated result would be written from uncommitted code."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)


def is_tracked(path: str | Path) -> bool:
    """True when git tracks ``path`` (False outside a checkout or without git)."""
    p = Path(path).resolve()
    try:
        return p.exists() and _git(p.parent, "ls-files", "--error-unmatch", p.name).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def uncommitted_source(path: str | Path) -> list[str]:
    """Tracked files of the checkout holding ``path`` (a file or a folder) with uncommitted
    changes, outputs (``results/``, ``reports/``) excluded."""
    p = Path(path).resolve()
    cwd = p if p.is_dir() else p.parent
    try:
        out = _git(cwd, "status", "--porcelain", "-uno")
        top = _git(cwd, "rev-parse", "--show-prefix")
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode or top.returncode:
        return []
    # porcelain paths are relative to the top of the checkout
    changed = [line[3:].split(" -> ")[-1] for line in out.stdout.splitlines() if line.strip()]
    return [f for f in changed if not f.startswith(OUTPUT_DIRS)]


def allow_dirty(flag: bool = False) -> bool:
    return flag or os.environ.get(ALLOW_DIRTY_ENV, "").strip().lower() in ("1", "true", "yes")


def check_curated_write(path: str | Path, allow: bool = False) -> None:
    """Raise :class:`DirtyTreeError` when ``path`` is curated and the source tree is dirty."""
    if allow_dirty(allow) or not is_tracked(path):
        return
    dirty = uncommitted_source(path)
    if dirty:
        shown = ", ".join(dirty[:3]) + (f" and {len(dirty) - 3} more" if len(dirty) > 3 else "")
        raise DirtyTreeError(
            f"{path} is a curated (committed) result and the source tree has uncommitted changes ({shown}); "
            f"commit them first, or pass --allow-dirty (or set {ALLOW_DIRTY_ENV}=1) to write rows marked -dirty"
        )
