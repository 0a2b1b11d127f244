"""The timer: sampling and warm-up policy (on a fake clock) and the CUDA device it runs on (mocked CUDA)."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from elastic_bench.measure import engine as engine_mod
from elastic_bench.measure import timer
from elastic_bench.runs.grid import expand
from elastic_bench.measure.gate import GateResult
from elastic_bench.measure.memory import MemoryResult
from elastic_bench.runs.spec import load_spec

CPU = torch.device("cpu")


class FakeClock:
    """``time.perf_counter(_ns)`` that advance only when a timed function says so."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9

    def costing(self, seconds) -> callable:
        costs = iter(seconds) if not isinstance(seconds, (int, float)) else None

        def fn() -> None:
            self.ns += int((next(costs) if costs is not None else seconds) * 1e9)

        return fn


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timer, "time", c)
    return c


@pytest.mark.parametrize(
    ("cost_s", "n"),
    [
        (0.001, 1000),  # fast: at least 1 s of samples
        (0.3, 10),  # slower: at least 10 samples (3 s)
        (30.0, 3),  # very slow: stops at max_time (60 s) with at least 3 samples
    ],
)
def test_default_sampling_is_10_samples_and_1_s(clock, cost_s, n):
    t = timer.time_pass(clock.costing(cost_s), CPU)
    assert t.n_samples == n == len(t.samples_ms)
    assert t.p50_ms == pytest.approx(cost_s * 1e3)


def test_repeats_caps_the_samples_and_samples_keep_their_order(clock):
    t = timer.time_pass(clock.costing([0.003, 0.001, 0.002, 0.005]), CPU, repeats=4)
    assert t.samples_ms == pytest.approx((3.0, 1.0, 2.0, 5.0)) and t.p50_ms == pytest.approx(2.5)


def test_warm_up_by_calls_and_by_time(clock):
    assert timer.warm_up(clock.costing(0.1), CPU, calls=1, min_time=0.5) == 5
    assert timer.warm_up(clock.costing(0.1), CPU, calls=8, min_time=0.5) == 8
    assert timer.warm_up(clock.costing(0.1), CPU, calls=0, min_time=0.0) == 0
    assert timer.warm_up(clock.costing(2.0), CPU, calls=0) == 1  # default: WARMUP_TIME_S
    assert timer.WARMUP_TIME_S > 0 and timer.MIN_SAMPLES >= 10 and timer.MIN_TIME_S >= 1.0


# ---------------------------------------------------------------- mocked CUDA, device cuda:1


class FakeCuda:
    """Just enough of ``torch.cuda`` to time on "cuda:1": it records which device context was
    current whenever an event is recorded, a sync happens or a kernel would launch."""

    def __init__(self) -> None:
        self.stack: list[int] = []
        self.seen: list[tuple[str, int | None]] = []
        fake = self

        class Device:
            def __init__(self, device):
                self.index = torch.device(device).index

            def __enter__(self):
                fake.stack.append(self.index)

            def __exit__(self, *exc):
                fake.stack.pop()

        class Event:
            def __init__(self, enable_timing=False):
                self.t = 0.0

            def record(self, stream=None):
                fake.note("event")
                self.t = float(len(fake.seen))

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return 1.0

        self.Device, self.Event = Device, Event

    def current(self) -> int | None:
        return self.stack[-1] if self.stack else None

    def note(self, what: str) -> None:
        self.seen.append((what, self.current()))

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "device", self.Device)
        monkeypatch.setattr(torch.cuda, "Event", self.Event)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: self.note("sync"))
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(device=device))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cuda_timing_runs_on_the_cells_device(monkeypatch):
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    dev = torch.device("cuda", 1)
    timer.warm_up(lambda: cuda.note("launch"), dev, calls=2, min_time=0)
    t = timer.time_pass(lambda: cuda.note("launch"), dev, repeats=6, min_time=0, min_samples=6)
    assert t.n_samples == 6 and t.mode == "cuda-events"
    assert {w for w, _ in cuda.seen} == {"event", "sync", "launch"}
    assert all(idx == 1 for _, idx in cuda.seen), cuda.seen


def test_engine_runs_every_step_of_a_cell_under_its_cuda_device(tmp_path, monkeypatch):
    """``--device cuda:1``: the gate, the build, warm-up, timing and memory all run inside
    ``torch.cuda.device(1)`` (events recorded on device 0 would time nothing)."""
    cuda = FakeCuda()
    spec = load_spec(dict(device="cpu", d_model=16, heads=2, layers=1, n_items=50, seq_len="16", batch="2", models="softmax",
                          causal="yes", out=str(tmp_path / "r.csv"), plot=False, repeats=3, min_time=0, warmup=1, process_repeats=1))
    (cell,) = expand(spec)
    engine = engine_mod.Engine(spec)
    cuda.install(monkeypatch)
    engine.device = torch.device("cuda", 1)
    cell = dataclasses.replace(cell, device="cuda:1")

    def gate(backend, **kw):
        cuda.note("gate")
        return GateResult(True, "fp32", 0.0, 1e-4, detail="eager", n=16)

    real_build = engine_mod.build_workload

    def build(c, device):
        cuda.note("build")
        work = real_build(dataclasses.replace(c, device="cpu"), CPU)  # the arithmetic runs on the CPU
        run = work.run

        def launch():
            cuda.note("launch")
            return run()

        work.run = launch
        return work

    def memory(fn, device, resident):
        cuda.note("memory")
        fn()
        return MemoryResult(1.0, 0.5, 2.0, "cuda-allocator")

    monkeypatch.setattr(engine_mod, "check_backend", gate)
    monkeypatch.setattr(engine_mod, "build_workload", build)
    monkeypatch.setattr(engine_mod, "measure_memory", memory)
    monkeypatch.setattr(engine_mod, "pass_flops", lambda *a: (1, "counter"))
    fields, _ = engine.run_cell(cell)
    assert fields["status"] == "ok", fields
    kinds = {w for w, _ in cuda.seen}
    assert {"gate", "build", "launch", "event", "memory"} <= kinds
    assert all(idx == 1 for _, idx in cuda.seen), cuda.seen
    assert cuda.stack == []  # every context was left
