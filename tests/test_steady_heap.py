"""The steady C heap (elastic_bench.measure.steady_heap): with it, chunks up to 32 MiB allocated
and freed in a loop stop page-faulting; without it, glibc hands them back to the kernel and
faults them in again on every iteration.  Each case runs in its own interpreter, so the test
process's allocator is never changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from elastic_bench.measure import steady_heap as sh
from elastic_bench.measure.timer import timer_mode

glibc_only = pytest.mark.skipif(sh._glibc() is None, reason="the steady heap needs glibc's mallopt")

PROBE = r"""
import ctypes, json, resource, sys, torch
from elastic_bench.measure.steady_heap import steady_heap
from elastic_bench.measure.timer import timer_mode
label = steady_heap() if sys.argv[1] == "steady" else ""
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
n = int(sys.argv[2])
def step():  # the C heap directly: PyTorch's own small allocations in between would blur the count
    chunks = [libc.malloc(n) for _ in range(4)]
    for c in chunks:
        ctypes.memset(c, 1, n)  # touch every page
    for c in chunks:
        libc.free(c)
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"label": label, "faults_per_step": faults / 10, "mode": timer_mode(torch.device("cpu"))}))
"""

MIB = 1024 * 1024


def _probe(mode: str, env: dict[str, str] | None = None, mib: int = 4) -> dict:
    # glibc's own tunables (MALLOC_*_, GLIBC_TUNABLES) would fix the thresholds for the plain probe too
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", sh.ENV)}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(mib * MIB)], capture_output=True, text=True, check=True, env={**base, **(env or {})}, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_steady_heap_stops_the_page_faults_of_a_reused_allocation():
    plain, steady = _probe("plain"), _probe("steady")
    pages = 4 * 4 * MIB / 4096  # four 4 MiB chunks a step
    assert plain["faults_per_step"] > 0.9 * pages, plain  # handed back and faulted in again, every step
    assert steady["faults_per_step"] < 0.01 * pages, steady  # the same heap pages, reused
    assert plain["mode"] == "perf-counter" and steady["mode"] == "perf-counter+steady-heap"
    assert steady["label"] == sh.LABEL


@glibc_only
def test_chunks_above_32_mib_keep_their_own_mapping_as_documented():
    steady = _probe("steady", mib=64)
    assert steady["faults_per_step"] > 0.9 * 4 * 64 * MIB / 4096, steady  # mapped and faulted in every call


@glibc_only
def test_steady_heap_can_be_switched_off_and_the_rows_say_so():
    off = _probe("steady", {sh.ENV: "0"})
    assert off["label"] == "" and off["mode"] == "perf-counter"
    assert off["faults_per_step"] > 0.9 * 4 * 4 * MIB / 4096


def test_without_glibc_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(sh, "_state", None)
    monkeypatch.setattr(sh, "_glibc", lambda: None)
    assert sh.steady_heap() == "" and sh.steady_heap_label() == ""
    assert timer_mode(torch.device("cpu")) == "perf-counter"
    assert timer_mode(torch.device("cuda")) == "cuda-events"
