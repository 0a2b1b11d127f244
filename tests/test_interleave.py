"""Call-level interleaving (``--interleave-calls``): the timer's cycles, the engine's groups, the
rounds that log a group together, and the paired ratio that its rows allow."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cli
from elastic_bench.measure import engine as engine_mod
from elastic_bench.measure import timer
from elastic_bench.measure.bootstrap import paired_ratio_ci, paired_rows, parse_samples, ratio_ci, rows_ratio_ci
from elastic_bench.measure.samples import format_samples
from elastic_bench.report import verdict as V
from elastic_bench.runs.grid import expand
from elastic_bench.runs.repeats import RepeatLog, headline, interleave_groups, interleaved
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import load_results

from test_timer import FakeClock  # the fake clock of the timer's tests
from test_verdict import acc_row

CPU = torch.device("cpu")
runner = CliRunner()


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timer, "time", c)
    return c


# ----------------------------------------------------------------------------- the timer


def test_every_cycle_calls_each_pass_once_in_a_fresh_order(clock):
    calls = []

    def costing(name, s):
        step = clock.costing(s)

        def fn():
            calls.append(name)
            step()

        return fn

    ts = timer.time_interleaved([costing("a", 0.002), costing("b", 0.004), costing("c", 0.001)], CPU, repeats=40, min_time=0, min_samples=40, warmup_cycles=1)
    cycles = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(cycles) == 41 and all(sorted(c) == ["a", "b", "c"] for c in cycles)  # one untimed warm-up cycle, then 40
    assert len({tuple(c) for c in cycles}) == 6  # every order occurs: not one rotation
    assert [t.n_samples for t in ts] == [40, 40, 40] and all(t.mode.endswith("+interleaved") for t in ts)
    assert [t.p50_ms for t in ts] == pytest.approx([2.0, 4.0, 1.0])


def test_no_pass_has_a_fixed_predecessor():
    """A rotation would put the same pass before M=0 in almost every cycle (the cache it leaves behind
    would bias M=0's time); the random orders spread every pass's predecessors evenly."""
    orders = timer.cycle_orders(4, seed=0)
    sequence = [i for _ in range(3000) for i in next(orders)]
    before = np.zeros((4, 4))
    for prev, cur in zip(sequence, sequence[1:]):
        before[cur, prev] += 1
    share = before / before.sum(axis=1, keepdims=True)
    others = share[~np.eye(4, dtype=bool)]  # itself only across a cycle boundary, rarer
    assert np.abs(others - others.mean()).max() < 0.03, share  # every other pass precedes it equally often (a rotation: one of them always)


def test_a_slow_pass_does_not_keep_a_fast_one_sampling_for_ever(clock):
    fast, slow = clock.costing(0.001), clock.costing(0.5)
    ts = timer.time_interleaved([fast, slow], CPU, min_time=1.0, max_time=3.0, warmup_cycles=0)
    # the slow pass uses up its 3 s after 6 samples, long before the fast one has 1 s of them: it ends
    # the group, as it would end its own sampling alone
    assert [t.n_samples for t in ts] == [6, 6] == [timer.time_pass(slow, CPU, min_time=1.0, max_time=3.0).n_samples] * 2
    ts = timer.time_interleaved([clock.costing(0.01), clock.costing(0.02)], CPU, min_time=1.0, max_time=60.0, warmup_cycles=0)
    assert [t.n_samples for t in ts] == [100, 100]  # both enough only when the faster one has 1 s of samples


# ----------------------------------------------------------------------------- the paired ratio


def test_the_paired_ratio_cancels_what_both_sides_shared():
    """Per-pair drift (the machine's state during a cycle) and per-process levels hit both sides alike:
    the paired interval stays narrow and covers the true ratio, the independent one is wide."""
    rng = np.random.default_rng(0)
    drift = np.concatenate([lv * rng.lognormal(0, 0.15, 30) for lv in (1.0, 1.3, 0.8, 1.1)])
    g = np.repeat(np.arange(4), 30)
    b = 20.0 * drift * rng.lognormal(0, 0.01, len(drift))
    a = 1.05 * 20.0 * drift * rng.lognormal(0, 0.01, len(drift))
    r, lo, hi = paired_ratio_ci(a, b, g)
    _, ilo, ihi = ratio_ci(a, b, g, g)
    assert lo <= 1.05 <= hi and hi - lo < 0.05  # the ratio of two medians: which pair is the median still moves it
    assert ihi - ilo > 10 * (hi - lo)
    assert paired_ratio_ci(a, a, g)[1:] == (1.0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ratio_ci(a, b[:-1], g)


def test_the_paired_ratio_matches_a_naive_pair_by_pair_bootstrap():
    rng = np.random.default_rng(1)
    shared = rng.lognormal(0, 0.3, 40)  # correlated sides: an unpaired bootstrap would be far wider
    a, b = 1.1 * shared * rng.lognormal(0, 0.03, 40), shared * rng.lognormal(0, 0.03, 40)
    g = np.repeat(np.arange(4), 10)
    r, lo, hi = paired_ratio_ci(a, b, g, n_boot=4000, seed=2)
    reps = []
    draw = np.random.default_rng(3)
    for _ in range(4000):
        idx = np.concatenate([np.flatnonzero(g == c)[draw.integers(0, 10, 10)] for c in draw.integers(0, 4, 4)])
        reps.append(np.median(a[idx]) / np.median(b[idx]))
    nlo, nhi = np.quantile(reps, [0.025, 0.975])
    assert r == pytest.approx(np.median(a) / np.median(b))
    assert (lo, hi) == pytest.approx((nlo, nhi), abs=0.01)
    _, ilo, ihi = ratio_ci(a, b, g, g)
    assert ihi - ilo > 3 * (nhi - nlo)  # the unpaired interval could not pass the check above


def _row(samples, run_id="r1", mode="perf-counter+steady-heap+interleaved", group="g", **kw):
    tokens = "|".join(f"{run_id}/r{r}/{group}" for r in range(len(samples)))
    return {"status": "ok", "run_id": run_id, "timer_mode": mode, "timing_group": tokens, "latency_samples_ms": format_samples(samples),
            "latency_ms_p50": float(np.median(np.concatenate(samples))), **kw}  # fmt: skip


def test_rows_pair_only_when_timed_together_in_one_run():
    a = _row([[10.0, 11.0, 12.0], [20.0, 21.0]])
    b = _row([[5.0, 5.5, 6.0], [10.0, 10.5]])
    assert paired_rows(a, b) and rows_ratio_ci(a, b)[3]
    assert not paired_rows(a, _row([[5.0, 5.5, 6.0], [10.0, 10.5]], run_id="r2"))  # another run: rounds of other processes
    assert not paired_rows(a, _row([[5.0, 5.5, 6.0], [10.0, 10.5]], group="h"))  # another group of the same run, as many samples
    resumed = {**b, "timing_group": "r1/r0/g|r7/r1/h"}  # round 1 timed in a later session, with other members
    assert not paired_rows(a, resumed) and not paired_rows({**a, "timing_group": ""}, {**b, "timing_group": ""})
    assert not paired_rows(a, {**b, "timer_mode": "perf-counter+steady-heap"})  # timed one after the other
    assert not paired_rows(a, {**b, "timer_mode": "mixed:perf-counter+interleaved,perf-counter+steady-heap+interleaved"})
    assert not paired_rows(a, _row([[5.0, 5.5], [10.0, 10.5, 11.0]]))  # rounds of other sizes
    ratio, lo, hi, paired = rows_ratio_ci(a, resumed)
    assert not paired and ratio == pytest.approx(2.0)
    ratio, lo, hi, paired = rows_ratio_ci({"latency_ms_p50": 3.0}, {"latency_ms_p50": 2.0})  # no samples: the medians, no interval
    assert (ratio, paired) == (1.5, False) and lo != lo


# ----------------------------------------------------------------------------- the engine


def _spec(tmp_path, **kw):
    base = dict(models="softmax,linear", seq_len="16", batch="1", n_items="20", d_model="16", heads="2", layers="1", causal="yes",
                repeats="4", min_time="0", warmup="1", process_repeats="1", plot="false", out=str(tmp_path / "r.csv"))  # fmt: skip
    return load_spec({**base, **kw})


def test_a_group_is_timed_together_and_its_memory_measured_alone(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    cells = expand(spec)
    real_build, real_memory = engine_mod.build_workload, engine_mod.measure_memory
    alive, seen = weakref.WeakSet(), []

    def build(cell, device):
        work = real_build(cell, device)
        alive.add(work.module)
        return work

    def memory(fn, device, resident):
        gc.collect()
        seen.append(len(alive))  # on CUDA the allocator's baseline would count every other live workload
        return real_memory(fn, device, resident)

    monkeypatch.setattr(engine_mod, "build_workload", build)
    monkeypatch.setattr(engine_mod, "measure_memory", memory)
    rows = engine_mod.measure_rows_interleaved(engine_mod.Engine(spec), cells, "run", _env())
    assert seen == [1, 1]
    monkeypatch.undo()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["n_samples"] for r in rows} == {4} and all(r["timer_mode"].endswith("+interleaved") for r in rows)
    alone = [engine_mod.measure_row(engine_mod.Engine(spec), c, "run", _env()) for c in cells]
    for together, single in zip(rows, alone):  # memory as if measured alone (the profiler's events of one call)
        assert together["peak_mem_mb"] == pytest.approx(single["peak_mem_mb"], rel=1e-6)
        assert together["act_mem_mb"] == pytest.approx(single["act_mem_mb"], rel=1e-6)


def test_a_cell_that_fails_mid_group_gets_its_row_and_the_others_are_timed_without_it(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    cells = expand(spec)
    real_build, real_time = engine_mod.build_workload, engine_mod.time_interleaved
    armed = {"on": False}

    def build(cell, device):
        work = real_build(cell, device)
        if cell.model == "linear":
            run = work.run

            def flaky():
                if armed["on"]:
                    raise RuntimeError("boom in the kernel")
                return run()

            work.run = flaky
        return work

    def timing(fns, *a, **kw):
        armed["on"] = True
        return real_time(fns, *a, **kw)

    monkeypatch.setattr(engine_mod, "build_workload", build)
    monkeypatch.setattr(engine_mod, "time_interleaved", timing)
    rows = {r["model"]: r for r in engine_mod.measure_rows_interleaved(engine_mod.Engine(spec), cells, "run", _env())}
    assert rows["linear"]["status"] == "error:RuntimeError" and "boom" in rows["linear"]["reason"]
    assert rows["softmax"]["status"] == "ok" and rows["softmax"]["n_samples"] == 4 and rows["softmax"]["peak_mem_mb"] > 0


def test_a_failure_no_call_owns_is_every_remaining_cells_row(tmp_path, monkeypatch):
    spec = _spec(tmp_path)

    def timing(fns, *a, **kw):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")  # surfaces at a synchronise

    monkeypatch.setattr(engine_mod, "time_interleaved", timing)
    rows = engine_mod.measure_rows_interleaved(engine_mod.Engine(spec), expand(spec), "run", _env())
    assert [r["status"] for r in rows] == ["error:RuntimeError"] * 2 and all("illegal memory" in r["reason"] for r in rows)


def _env():
    from elastic_bench.environment import environment

    return environment("cpu")


# ----------------------------------------------------------------------------- rounds and the sweep


def test_groups_are_the_cells_of_one_workload_shape(tmp_path):
    spec = _spec(tmp_path, models="softmax,linear,elastic-causal", seq_len="32,64", batch="1,2", experts="8")
    groups = interleave_groups(headline(expand(spec)))
    assert len(groups) == 2 and all(len(g) == 3 for g in groups)  # batch 1 and batch 2 at N=64
    assert all(len({(c.batch, c.seq_len) for c in g}) == 1 for g in groups)


def test_a_groups_rounds_are_logged_together_and_restart_when_they_would_not_pair(tmp_path):
    spec = _spec(tmp_path)
    cells = expand(spec)
    calls = []

    def group(todo, rnd):
        calls.append((rnd, [c.model for c in todo]))
        return [{"status": "ok", "batch": 1, "seq_len": 16, "latency_samples_ms": "1;2;3", "wall_s": 1.0, "timer_mode": "perf-counter+interleaved"} for _ in todo]

    log = RepeatLog(tmp_path / "r.csv")
    log.append(cells[0].config_hash(), {"status": "ok", "latency_samples_ms": "9;9;9"})  # one cell's round from a sequential run
    rows = dict((c.model, r) for c, r in interleaved(cells, 2, lambda c, r: pytest.fail("not per cell"), log, measure_group=group))
    assert calls == [(0, ["softmax", "linear"]), (1, ["softmax", "linear"])]  # started over: the lone round would not pair
    assert all(r["n_repeats"] == 2 and "9" not in r["latency_samples_ms"] for r in rows.values())
    calls.clear()
    for c in cells:  # one round of each, but timed one after the other: as many rounds, still not pairs
        log.append(c.config_hash(), {"status": "ok", "latency_samples_ms": "9;9;9", "timer_mode": "perf-counter+steady-heap"})
    rows = dict((c.model, r) for c, r in interleaved(cells, 2, lambda c, r: pytest.fail("not per cell"), log, measure_group=group))
    assert [rnd for rnd, _ in calls] == [0, 1] and all("9" not in r["latency_samples_ms"] for r in rows.values())


def test_an_interleaved_sweep_writes_rows_that_pair(tmp_path):
    out = tmp_path / "r.csv"
    res = runner.invoke(cli.app, ["sweep", "--models", "softmax,linear", "--seq-len", "8,16", "--batch", "1", "--n-items", "20", "--d-model", "16",
                                  "--heads", "2", "--layers", "1", "--causal", "yes", "--repeats", "3", "--min-time", "0", "--process-repeats", "2",
                                  "--interleave-calls", "--no-plot", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    df = load_results(out)
    head = df[df["seq_len"] == 16].set_index("model")
    assert (head["n_repeats"] == 2).all() and head["timer_mode"].str.endswith("+interleaved").all()
    assert paired_rows(head.loc["softmax"], head.loc["linear"]) and head.loc["softmax", "timing_group"].count("|") == 1
    assert parse_samples(head.loc["softmax", "latency_samples_ms"])[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert not df[df["seq_len"] == 8]["timer_mode"].str.contains("interleaved").any()  # only the headline cells
    bad = runner.invoke(cli.app, ["sweep", "--task", "accuracy", "--interleave-calls", "--models", "softmax", "--dry-run"])
    assert bad.exit_code == 2 and "--interleave-calls" in bad.output


def test_the_capacity_row_says_its_intervals_are_paired():
    def bank(m, lat):
        return _row([[lat, lat * 1.2, lat * 0.9], [lat * 1.5, lat * 1.4, lat * 1.6]], model="elastic", causal=False, seq_len=200, batch=20, device="cpu",
                    device_name="cpu-test", dtype="fp32", precision="fp32", level="model", objective="", loss="full", d_model=50, heads=1, layers=2,
                    n_items=3706, padding="full", dropout=0.0, cpu_threads=1, git_sha="abc", torch="2.x", host="h", options=f"memory_size={m}",
                    peak_mem_mb=10.0, config_hash=f"b{m}", memory_size=m, **{"pass": "infer"})  # fmt: skip

    rows = pd.DataFrame([bank(0, 20.0), bank(65536, 21.0)])
    lat = V.bank_latency(rows)
    top = lat[lat["memory_size"] == 65536].iloc[0]
    assert bool(top["paired"]) and top["vs_no_bank_ci_lo"] == pytest.approx(1.05) == top["vs_no_bank_ci_hi"]
    acc = pd.DataFrame([acc_row("elastic", 0, 0.08, "last", 0)])
    r = pd.DataFrame(V.capacity_claims(acc, rows)).set_index("regime").loc["inference cost vs bank size"]
    assert "paired CIs" in r["setting"] and r["verdict"] == "holds"
