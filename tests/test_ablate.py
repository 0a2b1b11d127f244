"""`elastic-bench ablate`: both halves into one CSV, resumable; parameter and FLOP accounting."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from typer.testing import CliRunner

import cli
from elastic_bench.runs.ablation import ablation_spec, run_ablation
from elastic_bench.report.accounting import elastic_forward_flops, memory_bank_params, with_accounting
from elastic_bench.measure.flops import count
from elastic_bench.store import load_results
from elastic_bench.recommender import ModelConfig, SeqRecModel

DATA = "synthetic:n_users=40,n_items=30,lengths=uniform:6..10,seed=3"
runner = CliRunner()


def _spec(tmp_path, **kw):
    args = dict(data=DATA, seeds="0", epochs=1, d_model="16", max_len="16", option=["experts=4"], device="cpu",
                efficiency={"repeats": 2, "min_time": 0.0}, out=str(tmp_path / "abl.csv"), plot=False)  # fmt: skip
    args.update(kw)
    return ablation_spec("memory-size", "0,16,64", **args)


def test_memory_size_ablation_rows_params_grow_flops_do_not(tmp_path):
    torch.set_num_threads(1)
    spec = _spec(tmp_path)
    run_ablation(spec, progress=False)
    df = with_accounting(load_results(spec.out))
    assert (df["status"] == "ok").all()
    for task in ("accuracy", "efficiency"):
        rows = df[df["task"] == task].sort_values("memory_size")
        assert rows["memory_size"].astype(int).tolist() == [0, 16, 64], task
        assert rows["params"].is_monotonic_increasing and rows["params"].nunique() == 3
        # the growth is the memory bank: M·d + √M·d, everything else identical
        assert rows["memory_params"].tolist() == [0, 16 * 16 + 4 * 16, 64 * 16 + 8 * 16]
        assert rows["compute_params"].iloc[1] == rows["compute_params"].iloc[2]
    eff = df[df["task"] == "efficiency"].sort_values("memory_size")
    assert (eff["seq_len"] == 16).all() and (eff["n_items"] == 30).all()  # joined at the accuracy max length and catalogue
    flops = eff["flops_analytic"].astype(float)
    # among M > 0 only the √M·d_q sub-key scores depend on M; M = 0 (static P⁰, shared by the
    # batch) saves the per-user first-layer dispatcher projection and IMR query: under 2 %
    assert flops.iloc[2] / flops.iloc[1] < 1.001 and flops.iloc[1] / flops.iloc[0] < 1.02
    assert (eff["params"].max() / eff["params"].min()) > 1.05
    # rows of the two halves join on model + options + shape
    acc = df[df["task"] == "accuracy"]
    assert set(acc["options"]) == set(eff["options"])
    # resumable: nothing runs twice
    n = len(load_results(spec.out))
    run_ablation(spec, progress=False)
    assert len(load_results(spec.out)) == n


@pytest.mark.parametrize("memory_size,layers,experts", [(0, 2, 4), (16, 1, 4), (64, 2, 8)])
def test_analytic_flops_match_the_counter(memory_size, layers, experts):
    b, n, d = 2, 24, 16
    cfg = ModelConfig.make("elastic", 40, n, options={"experts": experts, "memory_size": memory_size}, d_model=d, heads=2,
                           layers=layers, dropout=0.0, causal=False)  # fmt: skip
    model = SeqRecModel(cfg).eval()
    items = torch.randint(1, 41, (b, n))
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):  # the math kernel is made of ops the counter sees
        counted, _ = count(lambda: model(items))
    assert counted == elastic_forward_flops(b, n, d, layers, experts, memory_size)


def test_memory_bank_params_match_the_module():
    for m in (0, 16, 64):
        cfg = ModelConfig.make("elastic", 40, 16, options={"experts": 4, "memory_size": m}, d_model=16, heads=2, layers=1)
        src = SeqRecModel(cfg).encoder.source
        bank = sum(p.numel() for name, p in src.named_parameters() if name.split(".")[0] in ("values", "keys1", "keys2"))
        assert memory_bank_params("elastic", m, 16) == bank
    assert memory_bank_params("elastic-causal", 65536, 64) == 0 and memory_bank_params("softmax", "", 64) == 0


def test_ablate_cli_dry_run_and_bad_input(tmp_path):
    out = tmp_path / "x.csv"
    res = runner.invoke(cli.app, ["ablate", "causal", "--values", "elastic,elastic-causal", "--data", DATA, "--dry-run",
                                  "--device", "cpu", "--max-len", "16", "--option", "experts=4", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "accuracy half" in res.output and "efficiency half" in res.output and not out.exists()
    for args in (["ablate", "bogus", "--values", "1"], ["ablate", "memory-size", "--values", "1000"],
                 ["ablate", "query-pool", "--values", "max"], ["ablate", "layers", "--values", "1,2", "--layers", "2"],
                 ["ablate", "experts", "--values", "4", "--option", "experts=8"]):  # fmt: skip
        res = runner.invoke(cli.app, args + ["--data", DATA, "--out", str(out)])
        assert res.exit_code == 2, (args, res.output)
    assert not out.exists()


def test_shape_axis_gives_one_accuracy_sweep_per_value(tmp_path):
    spec = ablation_spec("layers", "1,2", data=DATA, max_len="32", d_model="16", device="cpu", out=str(tmp_path / "l.csv"), dry_run=True)
    assert [a.base.layers for a in spec.accuracy] == [1, 2] and spec.efficiency.layers == (1, 2)
    qp = ablation_spec("query-pool", "mean,last", data=DATA, max_len="32", device="cpu", out=str(tmp_path / "q.csv"), dry_run=True)
    assert dict(qp.efficiency.option_axes)["query_pool"] == ("mean", "last")
