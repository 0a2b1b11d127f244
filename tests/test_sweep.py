"""The sweep engine with fake backends: rows, statuses, resumption, OOM, the gate, option axes."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from bench_fakes import FakeInterrupt, FakeOOM, registered
from elastic_bench.runs.grid import expand
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import COLUMNS, ResultsStore, read_lines
from elastic_bench.runs.sweep import run_sweep
from elastic_bench.measure.steady_heap import steady_heap

TINY = dict(
    device="cpu",
    process_repeats=1,  # headline repeats in fresh processes: tests/test_repeats.py
    causal="yes",  # one causality per backend keeps the counts simple (the axis: tests/test_like_for_like.py)
    d_model=16,
    heads=2,
    layers=1,
    n_items=50,
    repeats=2,
    min_time=0,
    warmup=0,
    plot=False,
)

STEADY_CPU_TIMER = f"perf-counter+{steady_heap()}" if steady_heap() else "perf-counter"  # what the engine applies in this process (measure/steady_heap.py; its own tests check the heap)


def spec(tmp_path, **kw):
    return load_spec({**TINY, "out": str(tmp_path / "r.csv"), **kw})


def sweep(s):
    return run_sweep(s, Console(file=io.StringIO(), width=120), progress=False)


def rows(s):
    return ResultsStore(s.out).rows()


def test_rows_have_the_schema_and_measurements(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8,16", tokens_per_batch="32", models="fake-exact", **{"pass": "infer,fwd,fwd_bwd,train_step"})
        res = sweep(s)
    header, body, truncated = read_lines(s.out)
    assert tuple(header) == COLUMNS and not truncated
    rs = rows(s)
    assert res.ran == len(rs) == 2 * (2 + 2 * 2)  # infer, fwd + (fwd_bwd, train_step) x objectives all/last
    for r in rs:
        assert r["status"] == "ok", r
        assert float(r["latency_ms_p50"]) > 0 and int(r["n_samples"]) >= 2
        assert float(r["latency_ms_p20"]) <= float(r["latency_ms_p50"]) <= float(r["latency_ms_p80"])
        assert r["mem_method"] == "cpu-profiler-events" and float(r["peak_mem_mb"]) >= float(r["act_mem_mb"]) > 0
        assert int(r["flops"]) > 0 and r["flops_method"] == "counter" and int(r["params"]) > 0
        detail = "fake; optimizer AdamW fused" if r["pass"] == "train_step" else "fake"  # a step names its optimiser
        assert r["timer_mode"] == STEADY_CPU_TIMER and r["backend_detail"] == detail and r["gate_dtype"] == "fp64+fp32"  # precise, then the timed dtype
        assert r["batch"] == str(32 // int(r["seq_len"])) and len(r["config_hash"]) == 16
        assert (r["objective"] in ("all", "last")) == (r["pass"] in ("fwd_bwd", "train_step"))
        assert (r["loss"] == "full") == (r["pass"] in ("fwd_bwd", "train_step"))


def test_op_level_all_passes(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="16", batch="2", models="fake-exact", level="op", **{"pass": "infer,fwd,fwd_bwd,train_step"})
        sweep(s)
    rs = rows(s)
    assert [r["pass"] for r in rs] == ["infer", "fwd", "fwd_bwd", "train_step"]
    assert all(r["status"] == "ok" and r["level"] == "op" and r["objective"] == "" for r in rs)


def test_second_identical_run_does_no_work(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8,16", batch="2", models="fake-exact,fake-wrong")
        first = sweep(s)
        second = sweep(s)
    assert first.ran == 4 and second.ran == 0 and second.already_done == 4
    assert len(rows(s)) == 4


def test_incorrect_backend_is_never_timed(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8", batch="2", models="fake-exact,fake-wrong")
        sweep(s)
    by = {r["model"]: r for r in rows(s)}
    assert by["fake-wrong"]["status"] == "incorrect" and "relative error" in by["fake-wrong"]["reason"]
    assert by["fake-wrong"]["latency_ms_p50"] == "" and by["fake-wrong"]["n_samples"] == ""
    assert by["fake-exact"]["status"] == "ok"


def test_oom_is_a_row_and_the_sweep_goes_on(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="16..64", batch="1", models="fake-oom,fake-exact")
        res = sweep(s)
    st = {(r["model"], int(r["seq_len"])): r["status"] for r in rows(s)}
    assert st[("fake-oom", 16)] == "ok"
    assert st[("fake-oom", FakeOOM.oom_len)] == "oom"
    assert st[("fake-oom", 64)] == f"skipped:oom at seq_len={FakeOOM.oom_len}"
    assert all(st[("fake-exact", n)] == "ok" for n in (16, 32, 64))
    assert res.ran == 6


def test_killed_sweep_resumes_only_missing_cells(tmp_path):
    FakeInterrupt.armed, FakeInterrupt.at_len = True, 32
    try:
        with registered():
            s = spec(tmp_path, seq_len="16..64", batch="1", models="fake-kbd,fake-exact")
            with pytest.raises(KeyboardInterrupt):
                sweep(s)  # cells: kbd16, exact16, kbd32 <- Ctrl-C here
            assert [(r["model"], r["seq_len"]) for r in rows(s)] == [("fake-kbd", "16"), ("fake-exact", "16")]
            FakeInterrupt.armed = False
            res = sweep(s)
    finally:
        FakeInterrupt.armed = True
    assert res.already_done == 2 and res.ran == 4
    rs = rows(s)
    hashes = [r["config_hash"] for r in rs]
    assert len(rs) == 6 and len(set(hashes)) == 6 and all(r["status"] == "ok" for r in rs)


def test_truncated_last_line_is_repaired_and_recomputed(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8,16", batch="1", models="fake-exact")
        sweep(s)
        text = open(s.out).read()
        open(s.out, "w").write(text[: len(text) - 40])  # a hard kill in the middle of the last row
        header, body, truncated = read_lines(s.out)
        assert truncated and len(body) == 1
        res = sweep(s)
    assert res.ran == 1
    header, body, truncated = read_lines(s.out)
    assert not truncated and len(body) == 2 and len({r[-1] for r in body}) == 2
    assert all(len(r) == len(COLUMNS) for r in body)


def test_no_resume_reruns_everything(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8", batch="1", models="fake-exact")
        sweep(s)
        res = sweep(spec(tmp_path, seq_len="8", batch="1", models="fake-exact", resume=False))
    assert res.ran == 1 and len(rows(s)) == 2  # appended; readers keep the latest per hash


def test_option_axes_cross_only_declaring_backends(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8,16", batch="1", models="fake-exact,fake-experts", experts="2,4", memory_size="0,1k", causal="no")
        cells = expand(s)
    per_model = {}
    for c in cells:
        per_model.setdefault(c.model, set()).add(c.options)
    assert per_model["fake-exact"] == {()}
    assert per_model["fake-experts"] == {(("experts", e), ("memory_size", m)) for e in (2, 4) for m in (0, 1024)}
    assert len(cells) == 2 * (1 + 4)
    assert not any(c.causal for c in cells if c.model == "fake-experts")


def test_non_causal_models_train_on_the_last_position_only(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8", batch="1", models="fake-exact,fake-experts", causal="auto", **{"pass": "train_step"})
        objectives = {(c.model, c.causal, c.objective) for c in expand(s)}
    assert objectives == {("fake-exact", True, "all"), ("fake-exact", True, "last"), ("fake-exact", False, "last"), ("fake-experts", False, "last")}


def test_config_hash_is_stable_and_ignores_run_time(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8,16", batch="1", models="fake-exact")
        h1 = [c.config_hash() for c in expand(s)]
        h2 = [c.config_hash() for c in expand(spec(tmp_path, seq_len="8,16", batch="1", models="fake-exact", repeats=9))]
    assert h1 == h2 and len(set(h1)) == 2


def test_unusable_backend_is_skipped_with_reason(tmp_path):
    with registered():
        s = spec(tmp_path, seq_len="8", batch="1", models="fake-exact", heads="2", d_model="16")
        from bench_fakes import FakeExact
        from elastic_bench.attention import Capabilities

        old = FakeExact.capabilities
        FakeExact.capabilities = Capabilities(devices=("cuda",))
        try:
            sweep(s)
        finally:
            FakeExact.capabilities = old
    (r,) = rows(s)
    assert r["status"] == "skipped:needs cuda, not cpu"


def test_incorrect_backend_gets_no_speedup_in_plot_data(tmp_path):
    from elastic_bench.report.figure_kit import efficiency_rows

    with registered():
        s = spec(tmp_path, seq_len="8,16", batch="1", models="fake-exact,fake-wrong,fake-oom")
        sweep(s)
    df = efficiency_rows([s.out], baseline="fake-exact")
    wrong = df[df["model"] == "fake-wrong"]
    assert (wrong["status"] == "incorrect").all() and wrong["speedup"].isna().all()
    ok = df[(df["model"] == "fake-oom") & (df["status"] == "ok")]
    assert len(ok) == 2 and ok["speedup"].notna().all()  # ok rows do get one


def test_oom_detection():
    from elastic_bench.environment import is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))
