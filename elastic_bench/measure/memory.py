"""Peak memory of one benchmark pass, measured in its own call, separate from timing.

CUDA (``mem_method = "cuda-allocator"``), the METHODOLOGY protocol::

    gc.collect(); empty_cache(); synchronize(); reset_peak_memory_stats(); base = memory_allocated()
    run the pass
    synchronize(); peak = max_memory_allocated()
    peak_mem_mb = peak;  act_mem_mb = peak - base;  reserved_mem_mb = max_memory_reserved()

CPU (``mem_method = "cpu-profiler-events"``): there is no caching allocator to ask, so the
pass runs once under ``torch.profiler.profile(profile_memory=True)``.  The profiler records
every allocation and free of PyTorch's CPU allocator as a ``[memory]`` event with its size
(positive for an allocation, negative for a free) and a timestamp.  Summing the events in
time order gives the live bytes the pass itself added at every moment; its maximum is
``act_mem_mb`` (the same quantity as CUDA's ``peak - base``).  ``peak_mem_mb`` is
``act_mem_mb`` plus the bytes of the tensors that were live before the pass (parameters,
buffers, gradients, optimizer state and inputs, each storage counted once), which the
caller passes in.  ``reserved_mem_mb`` is left empty on CPU.  Allocations made outside
PyTorch's allocator (oneDNN scratch pads, the Python heap) are not seen.  Checked by
``tests/test_memory.py``: eager softmax attention at N = 2048 shows its O(N²) score matrix,
and doubling N multiplies the activation memory by about 4.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

MB = 1024.0**2


@dataclass(frozen=True)
class MemoryResult:
    peak_mb: float
    act_mb: float
    reserved_mb: float | None
    method: str


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared weights counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def measure_memory(fn: Callable[[], object], device: torch.device, resident: Callable[[], Iterable[torch.Tensor]] = lambda: ()) -> MemoryResult:
    """Run ``fn`` once and report its memory (see the module docstring)."""
    if device.type == "cuda":
        return _measure_cuda(fn, device)
    return _measure_cpu(fn, resident)


def _measure_cuda(fn: Callable[[], object], device: torch.device) -> MemoryResult:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    reserved = torch.cuda.max_memory_reserved(device)
    return MemoryResult(peak / MB, (peak - base) / MB, reserved / MB, "cuda-allocator")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (some torch builds print profiler start/stop lines there)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocation_peak(events: Iterable[tuple[int, int]]) -> int:
    """Max of the running sum of ``(time, bytes)`` allocator events taken in time order (≥ 0)."""
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        live += nbytes
        peak = max(peak, live)
    return peak


def _profiler_memory_events(prof: torch.profiler.profile) -> list[tuple[int, int]]:
    """Raw ``(start_ns, bytes)`` of every CPU allocator event the profiler saw."""
    results = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if results is not None:
        return [(e.start_ns(), e.nbytes()) for e in results.events() if e.name() == "[memory]"]
    # Older/other builds: frees outside an op are "[memory]" events and each op carries the
    # net bytes it allocated itself; coarser (an op's internal temporaries net out).
    return [(int(e.time_range.start * 1000), int(e.self_cpu_memory_usage)) for e in prof.events()]


def _measure_cpu(fn: Callable[[], object], resident: Callable[[], Iterable[torch.Tensor]]) -> MemoryResult:
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    base = tensor_bytes(resident())
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    act = allocation_peak(_profiler_memory_events(prof))
    return MemoryResult((base + act) / MB, act / MB, None, "cpu-profiler-events")
