"""Time one benchmark pass: warm up, then repeat until a sample count or a time budget.

- GPU: a pair of CUDA events around every call, read after one final synchronise
  (``timer_mode = "cuda-events"``).
- CPU: ``time.perf_counter_ns`` around every call (``timer_mode = "perf-counter"``).

Every shape is warmed up before it is timed: the sweep runs the pass once untimed (the
FLOP-counting call) and then :func:`warm_up` ``warmup`` more times, so compilation,
autotuning, cuDNN/cuBLAS heuristics and allocator growth stay out of the numbers.  Then
samples are taken until
``repeats`` samples exist or ``min_time`` seconds of samples have been taken (with at least
``min_samples``), whichever comes first.  The result is the median with p20 and p80.

Example::

    >>> t = time_pass(lambda: torch.randn(64, 64) @ torch.randn(64, 64), torch.device("cpu"), repeats=5)
    >>> t.n_samples, t.p50_ms > 0
    (5, True)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p20_ms: float
    p80_ms: float
    n_samples: int
    mode: str


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: list[float], mode: str) -> Timing:
    s = sorted(samples_ms)
    return Timing(statistics.median(s), quantile(s, 0.2), quantile(s, 0.8), len(s), mode)


def timer_mode(device: torch.device) -> str:
    return "cuda-events" if device.type == "cuda" else "perf-counter"


def warm_up(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Run ``fn`` untimed ``calls`` times; returns the last call's seconds."""
    last = 0.0
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        last = time.perf_counter() - t0
    return last


def time_pass(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int = 10,
    min_time: float = 0.5,
    min_samples: int = 3,
) -> Timing:
    """Median/p20/p80 of ``fn``'s latency; call :func:`warm_up` first."""
    repeats = max(1, repeats)
    min_samples = min(min_samples, repeats)
    if device.type == "cuda":
        return _time_cuda(fn, device, repeats, min_time, min_samples)
    samples: list[float] = []
    spent = 0.0
    while len(samples) < repeats and (spent < min_time or len(samples) < min_samples):
        t0 = time.perf_counter_ns()
        fn()
        dt = time.perf_counter_ns() - t0
        samples.append(dt / 1e6)
        spent += dt / 1e9
    return summarize(samples, timer_mode(device))


def _time_cuda(fn: Callable[[], object], device: torch.device, repeats: int, min_time: float, min_samples: int) -> Timing:
    torch.cuda.synchronize(device)
    pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    wall0 = time.perf_counter()
    while len(pairs) < repeats:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
        if len(pairs) >= min_samples and len(pairs) % 4 == 0:
            # the host runs ahead of the GPU: check the budget on finished events only
            end.synchronize()
            if sum(s.elapsed_time(e) for s, e in pairs) / 1e3 >= min_time:
                break
        if time.perf_counter() - wall0 > 60 * max(min_time, 1.0):  # safety net for stalls
            break
    torch.cuda.synchronize(device)
    return summarize([s.elapsed_time(e) for s, e in pairs], timer_mode(device))
