"""Multi-process (DistributedDataParallel) helpers: no-ops in a single process.

A run is distributed when a launcher (``torchrun``, or ``elastic-bench train --nproc N``,
which starts ``python -m torch.distributed.run``) sets ``WORLD_SIZE > 1`` in the
environment.  :func:`init_from_env` then joins the process group: ``gloo`` on the CPU,
``nccl`` on CUDA (each rank on ``cuda:{LOCAL_RANK}``).  Without it every helper here
behaves as in a world of one: rank 0, nothing to reduce, nothing to wait for.

Example::

    >>> init_from_env("cpu")          # under torchrun; a no-op otherwise
    >>> rank, world, local_rank = dist_info()
    >>> mine = shard(batches, rank, world)
    >>> all_reduce_sum(counts)       # in place, on every rank
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# set by `elastic-bench train --nproc N` for its workers: rank 0 writes its exit status
# there, so the launcher can return it (torchrun itself only says "a worker failed": 1)
EXIT_CODE_FILE_ENV = "ELASTIC_BENCH_EXIT_CODE_FILE"


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def in_launch() -> bool:
    """Inside a multi-process launch (torchrun set ``WORLD_SIZE > 1``)."""
    return env_world_size() > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``: from the process group once joined, else from the
    launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else ``(0, 1, 0)``."""
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if is_initialized():
        return dist.get_rank(), dist.get_world_size(), local
    if in_launch():
        return int(os.environ.get("RANK", "0") or 0), env_world_size(), local
    return 0, 1, 0


def is_main() -> bool:
    return dist_info()[0] == 0


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_from_env(device_type: str) -> bool:
    """Join the process group of a ``WORLD_SIZE > 1`` launch (idempotent); ``True`` when
    distributed.  On CUDA, pins this process to ``cuda:{LOCAL_RANK}`` first."""
    if is_initialized():
        return dist.get_world_size() > 1
    if not in_launch():
        return False
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) on this node: launch at most that many processes per node")
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend_for(device_type))
    return True


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def _comm_device(t: torch.Tensor) -> torch.device:
    # nccl reduces CUDA tensors only, gloo CPU tensors (CUDA too, but slowly)
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(tensor: torch.Tensor, op: Any) -> torch.Tensor:
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    dev = _comm_device(tensor)
    if tensor.device == dev:
        dist.all_reduce(tensor, op=op)
        return tensor
    moved = tensor.to(dev)
    dist.all_reduce(moved, op=op)
    tensor.copy_(moved)
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (and returned)."""
    return _reduce(tensor, dist.ReduceOp.SUM if dist.is_available() else None)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum of ``tensor`` over the ranks, in place (and returned)."""
    return _reduce(tensor, dist.ReduceOp.MAX if dist.is_available() else None)


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``flag`` on every rank (one decision, e.g. a wall-clock budget)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dev = _comm_device(t)
    t = t.to(dev)
    dist.broadcast(t, src=src)
    return bool(t.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def shard(seq: Sequence[T], rank: int, world: int) -> Sequence[T]:
    """Rank ``rank``'s share of ``seq``: items ``rank, rank + world, ...`` (all of it when world = 1)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} outside a world of {world}")
    return seq if world == 1 else seq[rank::world]


def seed_for(*keys: int) -> int:
    """A 63-bit seed derived from ``keys`` (e.g. ``(seed, rank)``): distinct, reproducible streams per rank."""
    import numpy as np

    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# ------------------------------------------------------------------------------------------
# `elastic-bench train --nproc N`: one node, N processes, through torchrun


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_nproc(nproc: int, device_type: str) -> None:
    """ValueError (one line) for a process count that cannot run here."""
    if nproc < 1:
        raise ValueError(f"--nproc {nproc}: must be >= 1")
    if nproc > 1 and in_launch():
        raise ValueError("--nproc: already inside a distributed launch (WORLD_SIZE is set); torchrun decides the number of processes")
    if nproc > 1 and device_type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s) here (one process per GPU); use --nproc {torch.cuda.device_count()} or fewer")


def launch_command(nproc: int, args: list[str]) -> list[str]:
    """The torchrun command that runs ``elastic_bench.train`` with ``args`` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "elastic_bench.train", *args]


def launch_env(nproc: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: ``OMP_NUM_THREADS`` = cores // N (at least 1) unless already set."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_count() // nproc)))
    return env


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node N -m elastic_bench.train
    ARGS`` and return its exit status (rank 0's own status when it failed with one, e.g. 2 for bad input)."""
    import tempfile

    env = launch_env(nproc)
    with tempfile.TemporaryDirectory(prefix="elastic-bench-ddp-") as tmp:
        code_file = os.path.join(tmp, "exit-code")
        env[EXIT_CODE_FILE_ENV] = code_file
        rc = subprocess.run(launch_command(nproc, args), env=env).returncode
        if rc != 0 and os.path.isfile(code_file):
            try:
                return int(open(code_file).read().strip() or rc)
            except ValueError:
                return rc
    return rc
