"""A steady CPU heap for timing: a timed call's page faults no longer depend on what ran before it.

PyTorch's CPU tensors come from the C library's ``malloc``.  glibc's serves a request above
its *mmap threshold* (128 KiB at start) with a fresh ``mmap``, unmaps it again on ``free``, and
raises the threshold (up to 32 MiB) each time it frees such a chunk; it also returns the top of
its heap to the kernel once more than a *trim threshold* is free.  A tensor that lands in new
pages costs a page fault per 4 KiB page, each zero-filled by the kernel.  So whether a timed
pass reuses mapped memory or faults its activations in again **depends on what the process
allocated before it**.  That is the order of the cells in a sweep.

Measured on the 2-core AMD EPYC, one thread, ELASTIC inference at N = 8192 with a memory bank
of M = 0, 4k, 64k, 1m slots, three fresh processes:

- Cells in that order: 60, 53, 43, 38 ms.  The bank seemed to make inference faster.
- The same cells in reverse order: 43, 42, 41, 41 ms (still listed from M = 0 to 1m).
- The M = 0 cell alone (``elastic-bench sweep --models elastic --memory-size 0 --seq-len 8192
  --pass infer --d-model 50 --heads 1 --layers 2 --n-items 3706 --threads 1`` under
  ``/usr/bin/time``): 626k minor faults and 51 ms with ``ELASTIC_BENCH_STEADY_HEAP=0``; 320k
  faults and 36 ms with the steady heap.

A caching allocator (CUDA's, jemalloc, tcmalloc) keeps freed memory for reuse, so the GPU
numbers never had this problem.  :func:`steady_heap` fixes glibc's two thresholds for the rest
of the process, through ``mallopt``:

- ``M_MMAP_THRESHOLD = 32 MiB``, glibc's largest (setting it also stops the dynamic change):
  every chunk up to 32 MiB comes from the heap, every larger one from its own ``mmap``.
- ``M_TRIM_THRESHOLD = 2 GiB - 1`` (``mallopt`` takes an ``int``): the heap's free top is not
  handed back to the kernel.

After the warm-up calls, a timed call reuses the heap pages of its chunks up to 32 MiB, whatever
ran earlier in the process.  A larger tensor is still mapped and faulted in on every call, as in
any glibc process, whatever ran before: softmax's fp32 score matrix, ``B·h·N²·4`` bytes, is one
from N = 2,897 at one sequence and one head, and from N = 2,048 at a batch of 2.  Those page
faults are part of such a model's cost on a glibc CPU, and they are the same in every order.

The guarantee is for the main arena, where one thread allocates (every cell of the verdict runs
one thread).  With more intra-op threads, glibc may give a thread its own arena, whose 64 MiB
heaps shrink by ``M_TOP_PAD``, not by the trim threshold.  And the setting is for the whole process
and stays: a script that runs a sweep in-process keeps a heap that is not trimmed afterwards.
(Not ``M_MMAP_MAX = 0``, every chunk from the heap: PyTorch allocates with ``posix_memalign``,
whose request is a little larger than the chunk freed by the previous call, so in a probe the
heap grew by 64 MiB, freshly faulted, at every step.)

The engine calls :func:`steady_heap` for every CPU cell.  Rows record it in ``timer_mode``, for
example ``perf-counter+steady-heap``, and rows of different timer modes are never paired for a
speed-up (:data:`elastic_bench.report.compare.PROVENANCE_KEYS`).  It does nothing in four cases:
on CUDA; where the C library is not glibc (macOS, musl); where ``malloc`` is not glibc's (jemalloc
or tcmalloc in ``LD_PRELOAD``, which cache freed memory already); and with
``ELASTIC_BENCH_STEADY_HEAP=0`` (to reproduce rows measured before it existed, whose
``timer_mode`` is plain ``perf-counter``).  Only latency is affected.  Peak memory on the CPU
comes from the profiler's allocation events (:mod:`.memory`), which do not see the C heap.

Checked by ``tests/test_steady_heap.py``: four 4 MiB chunks ``malloc``'ed and freed in a loop
fault in 4,064 of their 4,096 pages at every step without it, and none with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "ELASTIC_BENCH_STEADY_HEAP"
LABEL = "steady-heap"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (<malloc.h>)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt's int takes

_state: str | None = None  # LABEL once applied, "" when it cannot or must not be


def steady_heap() -> str:
    """Fix glibc's mmap and trim thresholds for the rest of this process; idempotent.

    Returns :data:`LABEL` when the heap is steady, else ``""``: not glibc, another ``malloc``
    preloaded, or switched off by ``ELASTIC_BENCH_STEADY_HEAP=0``."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def steady_heap_label() -> str:
    """:data:`LABEL` when this process's heap was made steady, else ``""`` (nothing applied)."""
    return _state or ""


def _apply() -> str:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return ""
    libc = _glibc()
    if libc is None:
        return ""
    results = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return LABEL if results == [1, 1] else ""  # glibc accepts both values; a refusal leaves the label off


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``) and its
    ``malloc`` is the one the process calls (no allocator preloaded in front of it), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError outside glibc
        if _address(ctypes.CDLL(None).malloc) != _address(libc.malloc):
            return None  # jemalloc, tcmalloc, ... in LD_PRELOAD: glibc's thresholds would not apply
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def _address(fn: object) -> int | None:
    return ctypes.cast(fn, ctypes.c_void_p).value
