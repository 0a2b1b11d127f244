"""The CPU memory method (profiler allocator events) gives plausible numbers; the timer's statistics."""

from __future__ import annotations

import pytest
import torch

from elastic_bench import registry
from elastic_bench.measure.cell import Cell
from elastic_bench.measure.memory import allocation_peak, measure_memory, tensor_bytes
from elastic_bench.measure.passes import build_workload
from elastic_bench.measure.timer import quantile, time_pass

MiB = 1024**2


def test_allocation_peak_is_the_running_maximum():
    assert allocation_peak([(0, 10), (1, 5), (2, -10), (3, 20), (4, -25)]) == 25
    assert allocation_peak([(2, -10), (0, 10), (1, 5)]) == 15  # taken in time order
    assert allocation_peak([(0, -8)]) == 0


def test_cpu_meter_sees_a_known_allocation():
    def fn():
        a = torch.empty(4 * MiB, dtype=torch.uint8)
        b = torch.empty(2 * MiB, dtype=torch.uint8)
        del a
        c = torch.empty(1 * MiB, dtype=torch.uint8)
        return b, c

    m = measure_memory(fn, torch.device("cpu"))
    assert m.method == "cpu-profiler-events"
    assert 6.0 <= m.act_mb < 6.5  # a and b live together; c comes after a is freed


def test_tensor_bytes_counts_each_storage_once():
    w = torch.zeros(1024)
    assert tensor_bytes([w, w, w[:10], torch.zeros(256)]) == 4096 + 1024


def _softmax_op_memory(n: int) -> float:
    cell = Cell(
        level="op", model="softmax", pass_="infer", dtype="fp32", device="cpu", device_name="", batch=1,
        seq_len=n, d_model=64, heads=2, layers=1, n_items=0, causal=True, objective="", loss="",
    )  # fmt: skip
    w = build_workload(cell, torch.device("cpu"))
    w.run()
    return measure_memory(w.run, torch.device("cpu"), w.resident).act_mb


@pytest.mark.skipif("softmax" not in registry.names(), reason="the softmax baseline is not registered")
def test_softmax_shows_its_quadratic_score_matrix():
    scores_mb = 1 * 2 * 2048 * 2048 * 4 / MiB  # [B, H, N, N] fp32 = 32 MiB
    act_2k = _softmax_op_memory(2048)
    act_1k = _softmax_op_memory(1024)
    assert act_2k >= scores_mb, act_2k
    assert 3.0 < act_2k / act_1k < 5.0, (act_1k, act_2k)  # O(N²)


def test_quantiles_and_timer():
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.2) == pytest.approx(1.8)
    calls = []
    t = time_pass(lambda: calls.append(1), torch.device("cpu"), repeats=7, min_time=10.0)
    assert t.n_samples == 7 == len(calls) and t.p20_ms <= t.p50_ms <= t.p80_ms and t.mode.startswith("perf-counter")
    t = time_pass(lambda: None, torch.device("cpu"), repeats=1000, min_time=0.0)
    assert t.n_samples == 10  # the time budget is spent at once; still at least 10 samples
