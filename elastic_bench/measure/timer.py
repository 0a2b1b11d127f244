"""Time one benchmark pass: warm up, then sample until a count and a time budget are both met.

- GPU: a pair of CUDA events around every call, read after one final synchronise
  (``timer_mode = "cuda-events"``).  Everything runs under ``torch.cuda.device(device)``, so
  the events, the synchronisations and the kernels are on the cell's GPU (``cuda:N``).
- CPU: ``time.perf_counter_ns`` around every call (``timer_mode = "perf-counter"``), on a
  steady C heap (:mod:`.steady_heap`; ``"perf-counter+steady-heap"``), so that no call
  page-faults its activations in because of what the process allocated before.

Warm-up (:func:`warm_up`): at least ``calls`` untimed calls **and** at least ``min_time``
seconds of them (default :data:`WARMUP_TIME_S`), so compilation, autotuning, cuDNN/cuBLAS
heuristics, allocator growth and CPU frequency ramps stay out of the numbers whatever one call
costs.  (The engine's first, FLOP-counting call is untimed too.)

Sampling (:func:`time_pass`): samples are taken until there are at least ``min_samples``
(default :data:`MIN_SAMPLES` = 10) **and** they add up to at least ``min_time`` seconds
(default :data:`MIN_TIME_S` = 1 s); it stops earlier only at ``repeats`` samples (the cap,
default :data:`MAX_SAMPLES`), or, for a call so slow that ``max_time`` seconds pass first,
with at least :data:`MIN_SAMPLES_SLOW` samples.  The result is the median with p20 and p80,
and every sample in the order taken (:attr:`Timing.samples_ms`, for bootstrap intervals).

Interleaved calls (:func:`time_interleaved`, a sweep's ``interleave_calls``): several passes
timed together, one call of each per *cycle*, each cycle in a fresh random order (seeded), until every pass has enough samples by the rule above, or one pass has used up
``max_time`` (then the others stop with as many samples as it has).  Every pass gets one sample per
cycle, so sample ``i`` of each pass was taken within one cycle of the others: a drift of the
machine (another process, the CPU's clock) hits them alike, and the ratio of two passes can be
estimated *paired*, cycle by cycle (:func:`~elastic_bench.measure.bootstrap.paired_ratio_ci`).
The timer mode gains ``+interleaved`` (:data:`INTERLEAVED`).

Example::

    >>> t = time_pass(lambda: torch.randn(64, 64) @ torch.randn(64, 64), torch.device("cpu"), min_time=0)
    >>> t.n_samples, len(t.samples_ms), t.p50_ms > 0
    (10, 10, True)
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch

from .bootstrap import INTERLEAVED_MODE as INTERLEAVED  # the timer-mode suffix of time_interleaved
from .steady_heap import steady_heap, steady_heap_label

MIN_SAMPLES = 10  # per cell, at least (unless capped by ``repeats``)
MIN_TIME_S = 1.0  # per cell, at least this many seconds of samples
MAX_SAMPLES = 10_000  # default cap of ``repeats``
WARMUP_TIME_S = 0.5  # warm up at least this long (and at least ``calls`` calls)
MAX_TIME_S = 60.0  # a slow call stops sampling here ...
MIN_SAMPLES_SLOW = 3  # ... with at least this many samples
WARMUP_CYCLES = 2  # untimed interleaved cycles before the timed ones


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p20_ms: float
    p80_ms: float
    n_samples: int
    mode: str
    samples_ms: tuple[float, ...] = ()  # every sample, in the order taken


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
    return Timing(statistics.median(s), quantile(s, 0.2), quantile(s, 0.8), len(s), mode, tuple(samples_ms))


def timer_mode(device: torch.device) -> str:
    """``cuda-events``; on CPU ``perf-counter``, with ``+steady-heap`` once :func:`warm_up` made it steady."""
    if device.type == "cuda":
        return "cuda-events"
    label = steady_heap_label()
    return f"perf-counter+{label}" if label else "perf-counter"


def device_context(device: torch.device) -> ContextManager:
    """``torch.cuda.device(device)`` for a CUDA device (events, syncs and launches on it), else
    nothing (also when CUDA is unavailable: the cell is then skipped with that reason)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def warm_up(fn: Callable[[], object], device: torch.device, calls: int, min_time: float = WARMUP_TIME_S) -> int:
    """Run ``fn`` untimed until at least ``calls`` calls and ``min_time`` seconds; returns the calls made.
    On CPU, the C heap is made steady first (:func:`.steady_heap.steady_heap`), so the warm-up
    maps every page that the timed calls will use."""
    if device.type != "cuda":
        steady_heap()
    done = 0
    t0 = time.perf_counter()
    with device_context(device):
        while done < calls or (min_time > 0 and time.perf_counter() - t0 < min_time):
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            done += 1
    return done


def _enough(n: int, spent: float, repeats: int, min_time: float, min_samples: int, max_time: float) -> bool:
    """Whether sampling stops after ``n`` samples adding up to ``spent`` seconds."""
    if n >= repeats:
        return True
    if n >= min_samples and spent >= min_time:
        return True
    return spent >= max_time and n >= min(MIN_SAMPLES_SLOW, min_samples)


def time_pass(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int = MAX_SAMPLES,
    min_time: float = MIN_TIME_S,
    min_samples: int = MIN_SAMPLES,
    max_time: float = MAX_TIME_S,
) -> Timing:
    """Median/p20/p80 and the samples of ``fn``'s latency (see the module docstring); call
    :func:`warm_up` first."""
    repeats = max(1, repeats)
    min_samples = max(1, min(min_samples, repeats))
    if device.type == "cuda":
        with device_context(device):
            return _time_cuda(fn, device, repeats, min_time, min_samples, max_time)
    samples: list[float] = []
    spent = 0.0
    while not _enough(len(samples), spent, repeats, min_time, min_samples, max_time):
        t0 = time.perf_counter_ns()
        fn()
        dt = time.perf_counter_ns() - t0
        samples.append(dt / 1e6)
        spent += dt / 1e9
    return summarize(samples, timer_mode(device))


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    device: torch.device,
    repeats: int = MAX_SAMPLES,
    min_time: float = MIN_TIME_S,
    min_samples: int = MIN_SAMPLES,
    max_time: float = MAX_TIME_S,
    warmup_cycles: int = WARMUP_CYCLES,
    seed: int = 0,
) -> list[Timing]:
    """One :class:`Timing` per pass of ``fns``, timed call by call, one call of each per cycle in
    a fresh random order (:func:`cycle_orders`), each pass with the same number of samples; warm
    every pass up first (:func:`warm_up`).  ``warmup_cycles`` untimed cycles run first, so the
    heap has seen the interleaved order."""
    fns = list(fns)
    if not fns:
        return []
    repeats = max(1, repeats)
    min_samples = max(1, min(min_samples, repeats))
    orders = cycle_orders(len(fns), seed)
    with device_context(device):
        for _ in range(max(0, warmup_cycles)):
            for i in next(orders):
                fns[i]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            samples = _interleaved_cuda(fns, orders, device, repeats, min_time, min_samples, max_time)
        else:
            samples = _interleaved_cpu(fns, orders, repeats, min_time, min_samples, max_time)
    mode = timer_mode(device) + INTERLEAVED
    return [summarize(s, mode) for s in samples]


def cycle_orders(k: int, seed: int = 0) -> Iterator[list[int]]:
    """The order of the passes in each cycle: a fresh seeded random permutation every cycle, so
    that every pass runs first, last and after every other pass equally often in expectation.
    (A rotation, ``[c, c+1, ...]``, would give each pass one predecessor in almost every cycle,
    and the cache or heap state that a call leaves behind would bias its successor's time.)"""
    rng = random.Random(seed)
    while True:
        order = list(range(k))
        rng.shuffle(order)
        yield order


def _interleaved_cpu(fns: list[Callable[[], object]], orders: Iterator[list[int]], repeats: int, min_time: float,
                     min_samples: int, max_time: float) -> list[list[float]]:  # fmt: skip
    samples: list[list[float]] = [[] for _ in fns]
    spent = [0.0] * len(fns)
    while not _group_enough(len(samples[0]), spent, repeats, min_time, min_samples, max_time):
        for i in next(orders):
            t0 = time.perf_counter_ns()
            fns[i]()
            dt = (time.perf_counter_ns() - t0) / 1e6
            samples[i].append(dt)
            spent[i] += dt / 1e3
    return samples


def _interleaved_cuda(fns: list[Callable[[], object]], orders: Iterator[list[int]], device: torch.device, repeats: int,
                      min_time: float, min_samples: int, max_time: float) -> list[list[float]]:  # fmt: skip
    """As :func:`_time_cuda`: events around every call, no synchronisation between calls (the host
    runs ahead of the GPU); the budget is checked on finished events every 4 cycles."""
    stream = torch.cuda.current_stream(device)
    pairs: list[list[tuple[torch.cuda.Event, torch.cuda.Event]]] = [[] for _ in fns]
    wall0 = time.perf_counter()
    cycle = 0
    while True:
        for i in next(orders):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fns[i]()
            end.record(stream)
            pairs[i].append((start, end))
        cycle += 1
        if cycle >= repeats:
            break
        if cycle >= min_samples and cycle % 4 == 0 or time.perf_counter() - wall0 > max_time:
            end.synchronize()
            spent = [sum(s.elapsed_time(e) for s, e in p) / 1e3 for p in pairs]
            if _group_enough(cycle, spent, repeats, min_time, min_samples, max_time):
                break
        if time.perf_counter() - wall0 > 10 * len(fns) * max(max_time, 1.0):  # safety net for stalls
            break
    torch.cuda.synchronize(device)
    return [[s.elapsed_time(e) for s, e in p] for p in pairs]


def _group_enough(n: int, spent: list[float], repeats: int, min_time: float, min_samples: int, max_time: float) -> bool:
    """Whether interleaved sampling stops after ``n`` cycles: every pass has enough by
    :func:`_enough`, or one pass has used up its ``max_time`` (so a slow pass beside a fast one
    does not sample until the fast one has ``min_time`` of samples)."""
    if all(_enough(n, s, repeats, min_time, min_samples, max_time) for s in spent):
        return True
    return any(s >= max_time for s in spent) and n >= min(MIN_SAMPLES_SLOW, min_samples)


def _time_cuda(fn: Callable[[], object], device: torch.device, repeats: int, min_time: float, min_samples: int, max_time: float) -> Timing:
    torch.cuda.synchronize(device)
    stream = torch.cuda.current_stream(device)
    pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    wall0 = time.perf_counter()
    spent = 0.0
    while True:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        pairs.append((start, end))
        n = len(pairs)
        if n >= repeats:
            break
        if n >= min_samples and n % 4 == 0 or time.perf_counter() - wall0 > max_time:
            # the host runs ahead of the GPU: check the budget on finished events only
            end.synchronize()
            spent = sum(s.elapsed_time(e) for s, e in pairs) / 1e3
            if _enough(n, spent, repeats, min_time, min_samples, max_time):
                break
        if time.perf_counter() - wall0 > 10 * max(max_time, 1.0):  # safety net for stalls
            break
    torch.cuda.synchronize(device)
    return summarize([s.elapsed_time(e) for s, e in pairs], timer_mode(device))
