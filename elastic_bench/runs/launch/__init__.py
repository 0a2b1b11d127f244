"""Where the cells of a sweep run: in this process (``local``) or as tasks on a Ray cluster (``ray``).

A launcher only *executes* cells; the results store stays the single source of truth and
has one writer, the driver (this process): every finished cell comes back as a row and is
appended and fsync'ed at once, so resumption works the same whichever launcher wrote a
row, and a killed driver loses no finished cell (cells in flight run again on resume).

- :class:`Job`: one unit of work (a picklable payload for a worker function), the Ray
  resources it needs, and its *group*: the jobs of a group run one after another, in
  order (a series of sequence lengths, so an out-of-memory at N skips the longer ones).
- :class:`Outcome`: what came back: a row, or why there is none (``worker-lost`` after
  the retry, ``oom`` when Ray's memory monitor killed the worker, ``error:<type>``).

Example::

    with get_launcher("ray", ray_address="auto") as launcher:
        run_sweep(spec, console, launcher=launcher)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAUNCHERS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    key: str  # the cell's config_hash
    payload: Any  # the worker function's argument (picklable)
    group: str = ""  # jobs of one group run sequentially, in submission order
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class Outcome:
    job: Job
    row: dict[str, Any] | None  # the worker's row, or None when the task produced none
    status: str = ""  # with row None: worker-lost | oom | error:<type> | skipped:<reason>
    reason: str = ""


class LocalLauncher:
    """Today's in-process runner: the sweeps keep their own loop; this object only names it."""

    name = "local"

    def __enter__(self) -> "LocalLauncher":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def describe(self) -> str:
        return "local (this process)"


def get_launcher(name: str, ray_address: str | None = None, ray_cpus: int | None = None, retries: int = 1):
    """``local`` -> :class:`LocalLauncher`; ``ray`` -> :class:`~.ray_launcher.RayLauncher` (needs
    ``pip install elastic-bench[distributed]``).  Raises ValueError with a one-line message."""
    if name == "local":
        if ray_address or ray_cpus:
            raise ValueError("--ray-address/--ray-cpus need --launcher ray")
        return LocalLauncher()
    if name == "ray":
        from .ray_launcher import RayLauncher, ray_missing_reason

        why = ray_missing_reason()
        if why:
            raise ValueError(f"--launcher ray: {why}; install it with: pip install 'elastic-bench[distributed]' (or pip install ray)")
        if ray_cpus is not None and ray_cpus < 1:
            raise ValueError(f"--ray-cpus {ray_cpus}: must be >= 1")
        return RayLauncher(address=ray_address, num_cpus=ray_cpus, retries=retries)
    raise ValueError(f"--launcher {name}: accepted: {', '.join(LAUNCHERS)}")


def is_remote(launcher: Any) -> bool:
    """True for a launcher that runs cells elsewhere (anything but ``None`` or local)."""
    return launcher is not None and getattr(launcher, "name", "local") != "local"
