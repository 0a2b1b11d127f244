"""The serving passes in the benchmark (issue 13): the grid, the gate of the serving path, the rows
(p99, state bytes), the figures and the report section."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from rich.console import Console

from baselines.softmax import SoftmaxAttention
from elastic_bench.runs.grid import expand
from elastic_bench.measure.gate import check_serving
from elastic_bench.report.markdown import serving_section
from elastic_bench.report.serving_plots import plot_serving
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import load_results
from elastic_bench.measure.samples import timing_fields
from elastic_bench.runs.sweep import run_sweep

CPU = torch.device("cpu")


def _gate(name, causal, pass_, padding="random", dtype="fp32"):
    return check_serving(name, device=CPU, run_dtype=dtype, precise="fp64", pass_=pass_, d_model=16, heads=2, layers=2, causal=causal,
                         options=(("chunk_size", 4), ("experts", 4)) if name.startswith("elastic") else (), seq_len=24, padding=padding)  # fmt: skip


@pytest.mark.parametrize("name,causal,pass_,path", [
    ("sdpa", True, "serve_step", "kv-cache:"),
    ("linear", True, "serve_step", "running-state:linear"),
    ("elastic-causal", True, "serve_step", "running-state:lda"),
    ("elastic", False, "serve_step", "recompute:"),
    ("softmax", False, "serve", "last-query:eager"),
])  # fmt: skip
@pytest.mark.parametrize("padding", ["full", "random"])
def test_serving_gate_passes_and_names_the_path(name, causal, pass_, path, padding):
    r = _gate(name, causal, pass_, padding)
    assert r.ok, r.reason
    assert path in r.detail and r.dtype == "fp64+fp32" and r.max_err < 1e-4


def test_serving_gate_catches_a_wrong_one_query_path(monkeypatch):
    """A last-query path that drops the key padding mask: the full forward still passes the op gate,
    the serving gate must fail it (with padding), in serve and in serve_step's KV cache."""
    orig = SoftmaxAttention.attend_last
    monkeypatch.setattr(SoftmaxAttention, "attend_last", lambda self, q, k, v, mask: orig(self, q, k, v, None))
    for pass_ in ("serve", "serve_step"):
        r = _gate("softmax", True, pass_, "random")
        assert not r.ok and "vs the full forward" in r.reason, r


def test_op_level_serving_cells_are_not_in_the_grid():
    spec = load_spec({"models": "softmax", "seq_len": "32", "pass": "serve,infer", "level": "model,op", "device": "cpu", "out": "/tmp/x.csv"})
    cells = expand(spec)
    assert {(c.level, c.pass_) for c in cells} == {("model", "serve"), ("model", "infer"), ("op", "infer")}
    assert all(c.batch == 1 for c in cells if c.pass_ == "serve")  # serving batch, not tokens-per-batch
    assert any("model level only" in n for n in spec.notes)


def test_p99_pools_every_repeat():
    row = timing_fields([[float(v) for v in range(1, 100)], [1000.0]])
    assert row["latency_ms_p99"] == pytest.approx(99 + 0.01 * 901, rel=1e-9)  # numpy-linear quantile of 1..99 and 1000
    assert row["n_repeats"] == 2


@pytest.fixture(scope="module")
def serving_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "serve.csv"
    spec = load_spec({"models": "sdpa,elastic-causal", "seq_len": "16,32", "pass": "serve,serve_step", "device": "cpu", "d_model": "16",
                      "heads": "2", "layers": "2", "experts": "4", "repeats": "3", "min_time": "0", "warmup": "0", "threads": "1",
                      "process_repeats": "1", "out": str(out), "plot": False})  # fmt: skip
    run_sweep(spec, Console(quiet=True), progress=False)
    return out


def test_sweep_rows_of_the_serving_passes(serving_csv):
    df = load_results(serving_csv)
    assert set(df["status"]) == {"ok"}, df[["model", "pass", "status", "reason"]]
    step = df[df["pass"] == "serve_step"].set_index(["model", "causal", "seq_len"])
    assert (df["latency_ms_p99"] >= df["latency_ms_p50"]).all()
    # exact state sizes: KV cache 2·L·N·d·4 + 8; elastic-causal L·h·k·(d_h+2)·4 + 8
    assert step.loc[("sdpa", "True", 32), "state_bytes_per_user"] == 2 * 2 * 32 * 16 * 4 + 8
    assert step.loc[("sdpa", "False", 32), "state_bytes_per_user"] == 32 * 8  # recompute: the item ids
    assert step.loc[("elastic-causal", "True", 16), "state_bytes_per_user"] == step.loc[("elastic-causal", "True", 32), "state_bytes_per_user"] == 2 * 2 * 4 * 10 * 4 + 8
    assert step.loc[("sdpa", "True", 32), "backend_detail"].startswith("kv-cache:")
    assert step.loc[("sdpa", "False", 32), "backend_detail"].startswith("recompute:")
    assert df[df["pass"] == "serve"]["state_bytes_per_user"].isna().all()


def test_serving_figures_and_report_section(serving_csv, tmp_path):
    df = load_results(serving_csv)
    files = plot_serving(df, tmp_path)
    assert {f.name for f in files if f.suffix == ".png"} == {"serve-step-latency.png", "serve-state-bytes.png", "serve-latency.png"}
    subset = pd.read_csv(tmp_path / "serve-state-bytes.csv")
    assert set(subset["pass"]) == {"serve_step"} and subset["state_bytes_per_user"].notna().all()
    text = "\n".join(serving_section(df))
    assert "**serve: who wins**" in text and "kv-cache" in text and "running-state" in text
    assert plot_serving(df[df["pass"] == "infer"], tmp_path / "none") == [] and serving_section(df.iloc[0:0]) == []


def test_a_batch_not_drawn_does_not_split_a_line(serving_csv, tmp_path):
    """Rows at another batch (B = 64 at two lengths) must not change the labels of the batch-1
    lines: one line per mechanism, over every length."""
    df = load_results(serving_csv)
    extra = df[(df["pass"] == "serve_step") & (df["seq_len"] == df["seq_len"].max())].assign(batch=64, config_hash=lambda d: d["config_hash"] + "b64")
    plot_serving(pd.concat([df, extra], ignore_index=True), tmp_path)
    drawn = pd.read_csv(tmp_path / "serve-step-latency.csv")
    assert set(drawn["batch"]) == {1}
    per_series = drawn.groupby("series")["seq_len"].nunique()
    assert (per_series == drawn["seq_len"].nunique()).all(), per_series
