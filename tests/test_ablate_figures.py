"""Paper figures, LaTeX table, significance rule and the figures manifest — from fixture CSVs only."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from elastic_bench.report.ablation_axes import AXES, axis_values
from elastic_bench.runs.figures import load_preset, run_figures, sha256
from elastic_bench.grammar import GrammarError
from elastic_bench.report.latex import escape, results_table
from elastic_bench.report.paper_figures import claim_check_data, pareto_front, plot_ablation, plot_claim_check, plot_pareto
from elastic_bench.report.significance import Stat, better
from elastic_bench.store import load_results

FIXTURE = Path(__file__).parent / "fixtures" / "ablation_results_small.csv"


@pytest.fixture(scope="module")
def df():
    return load_results(FIXTURE)


def _triple(files, name):
    names = {f.name for f in files}
    assert {f"{name}.png", f"{name}.pdf", f"{name}.csv"} <= names, names


def test_ablation_figures_from_csv(df, tmp_path):
    files = plot_ablation(df, "memory-size", tmp_path)
    _triple(files, "ablation-memory-size")
    _triple(files, "ablation-memory-size-capacity")
    cap = pd.read_csv(tmp_path / "ablation-memory-size-capacity.csv")
    el = cap[cap["model"] == "elastic"].sort_values("value")
    assert el["value"].tolist() == [0, 1024, 4096]
    assert el["memory_params"].tolist() == [0, 1024 * 32 + 32 * 32, 4096 * 32 + 64 * 32]  # M·d + √M·d
    data = pd.read_csv(tmp_path / "ablation-memory-size.csv")
    acc = data[(data["kind"] == "accuracy") & (data["model"] == "elastic")]
    assert acc["seeds"].tolist() == [3, 3, 3] and acc["mean"].round(3).tolist() == [0.095, 0.11, 0.13]
    assert {"softmax", "elastic-causal"} <= set(data[data["value"].isna()]["model"])  # reference lines


def test_pareto_and_claim_check_figures(df, tmp_path):
    files = plot_pareto(df, tmp_path) + plot_claim_check(df, tmp_path)
    for name in ("pareto-latency", "pareto-memory", "claim-check"):
        _triple(files, name)
    front = pd.read_csv(tmp_path / "pareto-latency.csv").set_index("label")["on_front"]
    # fastest (memory 0) and most accurate (memory 4k) are on the front; softmax (slow, worse) is not
    assert front["elastic [memory_size=0]"] and front["elastic [memory_size=4096]"] and not front["softmax"]
    cc = claim_check_data(df)
    row = cc[(cc["model"] == "elastic [memory_size=0]") & (cc["seq_len"] == 256)].iloc[0]
    # the fixture's baselines all ran causal: the non-causal elastic has nothing measured alike (issue #11)
    assert row["causality"] == "non-causal" and row["flash_model"] == "" and np.isnan(row["speedup_vs_softmax"])
    # with non-causal runs of the baselines it is compared with those
    cc = claim_check_data(_with_noncausal_baselines(df))
    row = cc[(cc["model"] == "elastic [memory_size=0]") & (cc["seq_len"] == 256)].iloc[0]
    assert row["flash_model"] == "sdpa-flash" and row["speedup_vs_softmax"] > row["speedup_vs_flash"] > 1


def _with_noncausal_baselines(df):
    """The fixture plus a non-causal copy (10 % faster) of every causal softmax / sdpa-flash efficiency row."""
    base = df[(df["task"] == "efficiency") & df["model"].isin(["softmax", "sdpa-flash"])].copy()
    base = base.assign(causal="False", latency_ms_p50=base["latency_ms_p50"] * 0.9, config_hash=base["config_hash"] + "-nc")
    return pd.concat([df, base], ignore_index=True)


def test_pareto_front_rule():
    x = pd.Series([1.0, 2.0, 3.0, 2.5])
    y = pd.Series([0.1, 0.3, 0.2, 0.3])
    assert pareto_front(x, y).tolist() == [True, True, False, False]


def test_axis_values_read_back_from_the_csv(df):
    acc = df[df["task"] == "accuracy"]
    assert set(axis_values(acc, "memory-size").dropna()) == {0, 1024, 4096}
    assert set(axis_values(acc, "causal")) == {"softmax", "elastic", "elastic-causal"}
    assert set(axis_values(acc[acc.model == "elastic"], "query-pool")) == {"mean"}
    assert AXES["memory-size"].parse("0,1k,4k") == (0, 1024, 4096)
    with pytest.raises(GrammarError):
        AXES["memory-size"].parse("1000")
    with pytest.raises(GrammarError):
        AXES["causal"].parse("maybe")


def test_significance_rule():
    assert better(Stat(0.30, 0.01, 3), Stat(0.25, 0.01, 3))
    assert not better(Stat(0.30, 0.03, 3), Stat(0.27, 0.02, 3))  # gap 0.03 ≤ 0.05
    assert not better(Stat(0.30, 0.0, 1), Stat(0.10, 0.0, 1))  # one seed: no spread known
    assert better(Stat(1.0, 0.1, 5), Stat(2.0, 0.1, 5), higher_is_better=False)


def _body_rows(tex: str) -> dict[str, list[str]]:
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    rows = {}
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.rstrip("\\").strip().rstrip("\\").split(" & ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_latex_table_structure_escaping_and_best_cells(df):
    tex = results_table(df, caption="Main results: 100% & more_")
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "100\\% \\& more\\_" in tex and "memory\\_size" in tex
    assert re.search(r"(?<!\\)[%&_](?![^$]*\$)", tex.replace(" & ", " ")) is None  # no unescaped specials outside math
    header = [h.strip() for h in tex.split("\\toprule")[1].split("\\midrule")[0].strip().rstrip("\\").strip().split(" & ")]
    rows = _body_rows(tex)
    ncols = len(header) - 1
    assert all(len(c) == ncols for c in rows.values())
    col = {h: i for i, h in enumerate(header[1:])}
    best = "elastic [memory\\_size=4096]"
    second = "elastic [memory\\_size=1024]"
    ndcg, hr = col["NDCG@10"], col["HR@10"]
    assert rows[best][ndcg].startswith("$\\mathbf{0.1300")
    assert sum("\\mathbf" in r[ndcg] for r in rows.values()) == 1
    assert not any("\\underline" in r[ndcg] for r in rows.values())  # 4k is separable from every other row on NDCG
    assert rows[best][hr].startswith("$\\mathbf{0.2360") and rows[second][hr].startswith("\\underline{")  # HR: a tie
    assert "\\mathbf" in rows["elastic [memory\\_size=0]"][col["Latency (ms)"]]  # lower is better


def test_escape():
    assert escape("a_b%c&d#e$f{g}~^\\") == "a\\_b\\%c\\&d\\#e\\$f\\{g\\}\\textasciitilde{}\\textasciicircum{}\\textbackslash{}"


def test_figures_from_csv_and_manifest_regenerates_identical_data(tmp_path):
    preset_file = tmp_path / "tiny.yaml"
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    shutil.copy(FIXTURE, results / "main.csv")
    shutil.copy(FIXTURE, results / "ablate-memory-size.csv")
    preset_file.write_text(yaml.safe_dump({"name": "tiny", "data": "ml-1m", "main": {"accuracy_models": "softmax,elastic"},
                                           "ablations": [{"axis": "memory-size", "values": "0,1k,4k"}]}))  # fmt: skip
    res = run_figures(str(preset_file), from_csv=True, out_root=tmp_path / "reports", results_root=tmp_path / "results", progress=False)
    out = tmp_path / "reports" / "tiny"
    man = json.loads((out / "manifest.json").read_text())
    assert man["csvs"][str(results / "main.csv")]["sha256"] == sha256(FIXTURE)
    assert {"claim-check.png", "pareto-latency.pdf", "ablation-memory-size.png", "main-results.tex"} <= set(man["figures"]) | set(man["figure_data"])
    assert "python" in man["environment"] and man["regenerate"].endswith("--from-csv")
    first = dict(man["figure_data"])
    pdfs = {p.name: sha256(p) for p in out.glob("*.pdf")}
    for f in res.files:  # regenerate from the CSVs alone, from scratch
        f.unlink()
    run_figures(str(preset_file), from_csv=True, out_root=tmp_path / "reports", results_root=tmp_path / "results", progress=False)
    again = json.loads((out / "manifest.json").read_text())["figure_data"]
    assert again == first and len(first) >= 8
    assert all(sha256(out / name) == h for name, h in first.items())
    # no creation timestamp, so a rebuild from the same CSV changes no committed byte
    assert pdfs and {p.name: sha256(p) for p in out.glob("*.pdf")} == pdfs
    assert not any(b"/CreationDate" in p.read_bytes() for p in out.glob("*.pdf"))


def test_presets_load_and_bad_preset_is_refused(tmp_path):
    for name in ("cpu-small", "paper"):
        p = load_preset(name)
        assert p.name == name and p.config["ablations"] and p.results_dir == Path("results") / name
    with pytest.raises(GrammarError, match="no such preset"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbogus: 1\n")
    with pytest.raises(GrammarError, match="unknown key"):
        load_preset(str(bad))
