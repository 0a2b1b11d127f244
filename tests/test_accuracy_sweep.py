"""`sweep --task accuracy` and `train`: rows in the sweep's schema, resumption, option axes, plots, bad input."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

import cli
from elastic_bench import registry
from elastic_bench.runs.accuracy import run_accuracy_sweep
from elastic_bench.report.accuracy_plots import plot_accuracy, seed_summary
from elastic_bench.runs.accuracy_spec import accuracy_spec
from elastic_bench.store import COLUMNS, load_results
from elastic_bench.train.config import TrainConfig
from elastic_bench.train.rows import base_row

DATA = "synthetic:n_users=120,n_items=60,lengths=uniform:8..16,seed=3"
runner = CliRunner()


def _spec(tmp_path, **kw):
    args = dict(models="softmax,elastic", experts="4", memory_size="0,16", seeds="0,1", data=DATA, epochs=1, d_model="16",
                device="cpu", out=str(tmp_path / "acc.csv"), plot=False)  # fmt: skip
    args.update(kw)
    return accuracy_spec(**args)


def test_accuracy_sweep_rows_resumption_and_option_axes(tmp_path):
    spec = _spec(tmp_path)
    res = run_accuracy_sweep(spec, progress=False)
    # softmax: 2 seeds; elastic: 2 memory sizes x 2 seeds (memory axis crossed with elastic only)
    assert res.ran == 6 and res.statuses == {"ok": 6}
    df = load_results(spec.out)
    assert list(pd.read_csv(spec.out, nrows=0).columns) == list(COLUMNS)
    assert (df["task"] == "accuracy").all() and df["ndcg@10"].notna().all()
    assert sorted(df[df.model == "elastic"]["memory_size"].astype(int).tolist()) == [0, 0, 16, 16]
    assert df[df.model == "softmax"]["memory_size"].isna().all()
    assert df["config_hash"].is_unique
    again = run_accuracy_sweep(spec, progress=False)
    assert again.ran == 0 and len(load_results(spec.out)) == 6


def test_accuracy_failures_are_rows(tmp_path):
    spec = _spec(tmp_path, models="elastic", memory_size=None, seeds="0", objective="all")
    res = run_accuracy_sweep(spec, progress=False)
    row = res.rows[0]
    assert row["status"] == "error:ValueError" and "causal" in row["reason"]


def test_accuracy_plots_from_csv_alone(tmp_path):
    spec = _spec(tmp_path)
    run_accuracy_sweep(spec, progress=False)
    files = plot_accuracy([spec.out], tmp_path / "fig")
    names = {f.name for f in files}
    assert {"accuracy-ndcg10.png", "accuracy-ndcg10.pdf", "accuracy-ndcg10.csv"} <= names
    subset = pd.read_csv(tmp_path / "fig" / "accuracy-ndcg10.csv")
    assert set(subset["series"]) == {"softmax", "elastic [memory_size=0]", "elastic [memory_size=16]"}
    assert (subset["seeds"] == 2).all()


def test_seed_summary_mean_and_std():
    df = pd.DataFrame({"series": ["a", "a", "a", "b"], "m": [0.1, 0.2, 0.3, 0.5]})
    s = seed_summary(df, "m", ["series"]).set_index("series")
    assert abs(s.loc["a", "mean"] - 0.2) < 1e-12 and abs(s.loc["a", "std"] - 0.1) < 1e-12 and s.loc["b", "std"] == 0.0


def test_train_command_writes_row_and_json(tmp_path):
    out = tmp_path / "train.csv"
    res = runner.invoke(cli.app, ["train", "--model", "softmax", "--data", DATA, "--epochs", "1", "--d-model", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = load_results(out)
    assert len(df) == 1 and df.iloc[0]["task"] == "accuracy" and df.iloc[0]["status"] == "ok"
    js = list(tmp_path.glob("train-*.json"))
    assert len(js) == 1 and json.loads(js[0].read_text())["test_hr@10"] >= 0


def test_a_row_records_the_backends_default_options_and_keeps_its_hash(tmp_path):
    # `train --model elastic` names no option: its row still says which experts and memory ran
    declared = registry.get("elastic").capabilities.options
    cfg = TrainConfig(model="elastic", data=DATA)
    row = base_row(cfg, "run")
    assert (row["experts"], row["memory_size"]) == (declared["experts"], declared["memory_size"])
    assert row["options"] == ";".join(f"{k}={v}" for k, v in sorted(declared.items()))
    # the defaults go into the columns, not the hash: committed results keep resuming
    assert row["config_hash"] == cfg.config_hash() == "c2ba264bfc0597bb"
    # a sweep's cell names every option already: its row reads as before
    swept = cfg.with_options(**{**declared, "experts": 4})
    assert base_row(swept, "run")["options"] == ";".join(f"{k}={v}" for k, v in swept.options) and base_row(swept, "run")["experts"] == 4
    out = tmp_path / "train.csv"
    res = runner.invoke(cli.app, ["train", "--model", "elastic", "--data", DATA, "--epochs", "1", "--d-model", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = load_results(out).iloc[0]
    assert (int(r["experts"]), int(r["memory_size"])) == (declared["experts"], declared["memory_size"])


def test_bad_input_exits_2(tmp_path):
    cases = [
        ["train", "--memory-size", "1000"],
        ["train", "--model", "elastic", "--objective", "all", "--data", DATA, "--epochs", "1"],
        ["train", "--preset", "nope"],
        ["train", "--data", "no-such-file.txt"],
        ["train", "--eval", "sampled:x", "--data", DATA],
        ["sweep", "--task", "accuracy", "--pass", "infer"],
        ["sweep", "--task", "bogus"],
        ["sweep", "--data", "ml-1m"],
        ["sweep", "--task", "accuracy", "--models", "sofmax", "--out", str(tmp_path / "x.csv")],
        ["sweep", "--task", "accuracy", "--seeds", "abc", "--out", str(tmp_path / "x.csv")],
    ]
    for args in cases:
        res = runner.invoke(cli.app, args)
        assert res.exit_code == 2, (args, res.output)
    assert not (tmp_path / "x.csv").exists()
