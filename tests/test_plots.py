"""Figures and the report from a committed fixture CSV alone; incorrect rows never get a speed-up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

import cli
from elastic_bench.report.compare import with_baseline
from elastic_bench.report.markdown import claim_check
from elastic_bench.store import load_results

FIXTURE = Path(__file__).parent / "fixtures" / "bench_results_small.csv"
runner = CliRunner()


def test_baseline_comparison_only_between_ok_rows_measured_alike():
    df = with_baseline(load_results(FIXTURE), "softmax")
    wrong = df[df["model"] == "fake-wrong"]
    assert len(wrong) and wrong["speedup"].isna().all() and wrong["peak_mem_reduction"].isna().all()
    # softmax ran out of memory at 2048 in train_step: nothing there has a speed-up
    t = df[(df["pass"] == "train_step") & (df["seq_len"] == 2048)]
    assert t["speedup"].isna().all()
    e = df[(df["model"] == "elastic") & (df["pass"] == "infer") & (df["seq_len"] == 1024)].iloc[0]
    s = df[(df["model"] == "softmax") & (df["pass"] == "infer") & (df["seq_len"] == 1024) & (df["causal"] == e["causal"])].iloc[0]
    assert e["speedup"] == s["latency_ms_p50"] / e["latency_ms_p50"]
    # train_step rows compare only under the same objective
    el = df[(df["model"] == "elastic") & (df["pass"] == "train_step") & (df["seq_len"] == 512)].iloc[0]
    sl = df[(df["model"] == "softmax") & (df["pass"] == "train_step") & (df["objective"] == "last") & (df["seq_len"] == 512) & (df["causal"] == el["causal"])].iloc[0]
    assert el["objective"] == "last" and el["speedup"] == sl["latency_ms_p50"] / el["latency_ms_p50"]


def test_plot_command_writes_png_pdf_and_csv_subsets(tmp_path):
    out = tmp_path / "figs"
    result = runner.invoke(cli.app, ["plot", str(FIXTURE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for kind in ("latency", "speedup", "memory", "mem-reduction"):
        for p in ("infer", "train_step"):
            for ext in ("png", "pdf", "csv"):
                assert (out / f"{kind}-{p}.{ext}").stat().st_size > 0, (kind, p, ext)
    sub = pd.read_csv(out / "speedup-infer.csv")
    assert "fake-wrong" not in set(sub["model"]) and "softmax" not in set(sub["model"])
    assert set(sub["status"]) == {"ok"} and sub["speedup"].notna().all()
    lat = pd.read_csv(out / "latency-infer.csv")
    assert set(lat["model"]) == {"softmax", "sdpa-flash", "elastic", "elastic-causal"}


def test_report_has_the_claim_check_and_no_speedup_for_incorrect(tmp_path):
    result = runner.invoke(cli.app, ["report", str(FIXTURE), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Claim check (inference)" in md and "×2.7" in md and "90%" in md
    assert "![latency infer](latency-infer.png)" in md
    assert "incorrect" in md and "gate: relative error" in md  # listed among the cells that did not run
    cc = claim_check(with_baseline(load_results(FIXTURE), "softmax").assign(series=lambda d: d["model"]))
    assert set(cc["model"]) == {"elastic", "elastic-causal"} and set(cc["seq_len"]) == {256, 512, 1024, 2048}
    assert set(cc["fastest exact"]) == {"sdpa-flash (flash-class)"}


def test_plot_of_a_missing_file_is_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in ("plot", "report"):
        result = runner.invoke(cli.app, [cmd, str(tmp_path / "nope.csv")])
        assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "reports").exists()
