"""The ``ray`` launcher: each pending cell is a Ray task; the driver is the only writer.

- Connects to a running cluster (``--ray-address auto`` or ``host:port``; also
  ``$RAY_ADDRESS``) or starts a local one (``--ray-cpus`` CPUs, default: all).
- A task asks for the resources of its cell: one GPU for a CUDA cell, else its CPU
  threads (Ray sets ``OMP_NUM_THREADS`` of the worker to match).  A cell no node of the
  cluster could ever run (a GPU cell on a CPU-only cluster, more threads than any node has
  CPUs) is a ``skipped`` row instead of a task waiting forever.
- Jobs of one *group* (a series of sequence lengths) run one after another, so the
  driver can skip the longer lengths after an out-of-memory; groups run in parallel.
- A worker that dies (segfault, killed, node lost) is retried once by Ray
  (``max_retries=1``), then reported as ``worker-lost``; a worker Ray's memory monitor kills
  is reported as ``oom`` (on a local cluster; a cluster started by ``ray start`` needs
  ``RAY_task_oom_retries=0`` in its environment, else Ray retries such tasks without end).
- Ctrl-C (or any exception in the driver) cancels the tasks in flight; a local cluster
  this launcher started is shut down.
"""

from __future__ import annotations

import importlib.util
import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from . import Job, Outcome


def ray_missing_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed"
    return None


class RayLauncher:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, retries: int = 1):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.retries = retries
        self._owned = False
        self._remotes: dict[Callable, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "RayLauncher":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            if self.address:
                if self.num_cpus is not None:
                    raise ValueError("--ray-cpus sizes a local Ray cluster; it cannot be combined with --ray-address")
                ray.init(address=self.address, **kw)
            else:
                # a task the memory monitor kills is retried without end by default: make it an oom row
                ray.init(num_cpus=self.num_cpus, _system_config={"task_oom_retries": 0}, **kw)
        except (ConnectionError, RuntimeError) as exc:
            raise ValueError(f"--launcher ray: cannot start or reach Ray ({str(exc).splitlines()[0]})") from None
        self._owned = True

    def shutdown(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False
            self._remotes.clear()

    def resources(self) -> dict[str, float]:
        import ray

        self.start()
        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def largest_node(self) -> dict[str, float]:
        """The most CPUs and GPUs any one alive node has (a task must fit on one node)."""
        import ray

        self.start()
        best: dict[str, float] = {"CPU": 0.0, "GPU": 0.0}
        for node in ray.nodes():
            if node.get("Alive"):
                for k in best:
                    best[k] = max(best[k], float(node.get("Resources", {}).get(k, 0)))
        return best

    def describe(self) -> str:
        r = self.resources()
        where = f"cluster at {self.address}" if self.address else "local cluster"
        return f"ray {where}: {r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs, {sum(1 for k in r if k.startswith('node:') and k != 'node:__internal_head__')} node(s)"

    # -- execution ---------------------------------------------------------------------------
    def _remote(self, fn: Callable) -> Any:
        import ray

        if fn not in self._remotes:
            self._remotes[fn] = ray.remote(fn)
        return self._remotes[fn]

    def run(self, fn: Callable[[Any], dict[str, Any]], jobs: Iterable[Job], skip: Callable[[Job], str | None] | None = None) -> Iterator[Outcome]:
        """Run ``fn(job.payload)`` for every job as Ray tasks; yield each :class:`Outcome` as it
        finishes.  ``skip(job)`` is asked just before a job is submitted (after the outcomes of
        its group so far were consumed); a reason makes it a ``skipped:<reason>`` outcome."""
        import ray

        self.start()
        remote = self._remote(fn)
        capacity = self.largest_node()
        groups: dict[str, deque[Job]] = {}
        for job in jobs:
            groups.setdefault(job.group or job.key, deque()).append(job)
        in_flight: dict[Any, Job] = {}
        ready_outcomes: deque[Outcome] = deque()

        def submit_next(group: str) -> None:
            queue = groups[group]
            while queue:
                job = queue.popleft()
                why = skip(job) if skip else None
                if not why and job.num_gpus > capacity.get("GPU", 0):
                    why = f"no node of the Ray cluster has {job.num_gpus:g} GPU(s) (largest: {capacity.get('GPU', 0):g})"
                if not why and job.num_cpus > capacity.get("CPU", 0):
                    why = f"no node of the Ray cluster has {job.num_cpus:g} CPUs (largest: {capacity.get('CPU', 0):g}; lower --threads)"
                if why:
                    ready_outcomes.append(Outcome(job, None, f"skipped:{why}"))
                    continue
                opts = dict(num_cpus=job.num_cpus, num_gpus=job.num_gpus, max_retries=self.retries, retry_exceptions=False)
                in_flight[remote.options(**opts).remote(job.payload)] = job
                return

        try:
            for group in list(groups):
                submit_next(group)
            while in_flight or ready_outcomes:
                while ready_outcomes:  # skipped jobs: submit_next already moved on to the group's next job
                    yield ready_outcomes.popleft()
                if not in_flight:
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1)
                ref = done[0]
                job = in_flight.pop(ref)
                yield _outcome(job, ref, self.retries)
                submit_next(job.group or job.key)
        finally:
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass


def _outcome(job: Job, ref: Any, retries: int) -> Outcome:
    import ray
    from ray import exceptions as rex

    try:
        return Outcome(job, ray.get(ref))
    except rex.OutOfMemoryError as exc:
        return Outcome(job, None, "oom", "Ray's memory monitor killed the worker: " + _first_line(exc))
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError, rex.RaySystemError) as exc:
        return Outcome(job, None, "worker-lost", f"{type(exc).__name__} (after {retries} retry): {_first_line(exc)}")
    except rex.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        return Outcome(job, None, f"error:{type(cause).__name__}", _first_line(cause))
    except rex.RayError as exc:  # unschedulable, runtime env, disk or object store full...: a row, not a crash
        return Outcome(job, None, f"error:{type(exc).__name__}", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
