"""The verdict preset: its rules on hand-made rows, its accuracy groups (checkpointed cells that
resume), and the labels `train` prints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cli
from elastic_bench.presets import published_reference, train_preset
from elastic_bench.report import verdict as V
from elastic_bench.report import verdict_figures as VF
from elastic_bench.report import verdict_report as VR
from elastic_bench.report.training_budget import CellKey, parse_pending
from elastic_bench.runs.figures import (
    load_preset,
    pending_cells,
    plan_preset,
    run_figures,
)
from elastic_bench.store import load_results

runner = CliRunner()
DATA = "synthetic:n_users=60,n_items=40,lengths=lognormal:12,seed=0"


# ----------------------------------------------------------------------------- efficiency rules


def eff_row(model: str, causal: bool, n: int, lat: float, peak: float, pass_: str = "infer", **kw) -> dict:
    samples = ";".join(f"{lat * (1 + 0.01 * ((i * 7) % 5 - 2)):.4f}" for i in range(20))
    row = dict(status="ok", model=model, causal=causal, seq_len=n, batch=1, device="cpu", device_name="cpu-test", dtype="fp32", precision="fp32",
               level="model", objective="", loss="full", d_model=50, heads=1, layers=2, n_items=3706, padding="full", dropout=0.0,
               cpu_threads=1, git_sha="abc", torch="2.x", host="h", options="", latency_ms_p50=lat, latency_samples_ms=samples,
               peak_mem_mb=peak, config_hash=f"{model}-{causal}-{n}-{pass_}", memory_size="")  # fmt: skip
    row["pass"] = pass_
    row.update(kw)
    return row


def claim(table: pd.DataFrame, claim_: str, comparison: str, regime: str = "throughput (infer)") -> pd.Series:
    hit = table[(table["claim"] == claim_) & (table["comparison"] == comparison) & (table["regime"] == regime)]
    assert len(hit) == 1, (claim_, comparison, regime, table[["claim", "regime", "comparison"]])
    return hit.iloc[0]


def test_memory_and_speed_rules_against_softmax_and_the_best_exact_backend():
    rows = [
        eff_row("elastic-causal", True, 256, 1.0, 50.0), eff_row("softmax", True, 256, 1.5, 60.0), eff_row("sdpa", True, 256, 0.8, 55.0),
        eff_row("elastic-causal", True, 8192, 10.0, 10.0), eff_row("softmax", True, 8192, 30.0, 100.0), eff_row("sdpa", True, 8192, 20.0, 12.0),
        # a non-causal softmax that would flatter elastic-causal: never paired with it
        eff_row("softmax", False, 8192, 300.0, 1000.0),
    ]  # fmt: skip
    t = V.claims_table(pd.DataFrame(rows), pd.DataFrame(columns=["status"]), pd.DataFrame())
    mem = claim(t, "memory", "elastic-causal vs softmax")
    # in words, never a signed "+90.0%" that reads as "more"
    assert mem["verdict"] == "holds" and mem["measurement"].startswith("90.0% less peak memory than softmax at N=8192")
    assert mem["measurement"].endswith("(at N=256: 16.7% less)")
    exact = claim(t, "memory", "elastic-causal vs best-exact")
    assert exact["verdict"] == "does not hold" and exact["measurement"].startswith("16.7% less peak memory than sdpa")  # vs 12 MB
    speed = claim(t, "speed", "elastic-causal vs softmax")
    assert speed["verdict"] == "holds" and speed["measurement"].startswith("x3.00")
    fast = claim(t, "speed", "elastic-causal vs best-exact")
    assert fast["verdict"] == "does not hold" and "sdpa" in fast["measurement"]
    assert "not evidence for the GPU claim" in speed["why"]
    # no GPU rows: the GPU claim is not measurable here, and says what decides it
    gpu = t[t["regime"].str.startswith("GPU")]
    assert set(gpu["verdict"]) == {"not measurable here"} and gpu["why"].str.contains("gpu_sweep").all()
    assert set(t["verdict"]) <= set(V.VERDICTS)


def test_serving_memory_uses_state_bytes_per_user():
    rows = [eff_row("elastic-causal", True, 800, 1.0, 40.0, pass_="serve_step", state_bytes_per_user=1000),
            eff_row("softmax", True, 800, 1.0, 40.0, pass_="serve_step", state_bytes_per_user=100000)]  # fmt: skip
    t = V.claims_table(pd.DataFrame(rows), pd.DataFrame(columns=["status"]), pd.DataFrame())
    r = claim(t, "memory", "elastic-causal vs softmax", "serving (serve_step)")
    assert r["verdict"] == "holds" and r["measurement"].startswith("99.0% less state bytes per user than softmax")


def test_a_tie_in_serving_state_goes_to_the_faster_exact_backend():
    # softmax and SDPA keep the same KV cache: the best exact backend is the one a server would pick
    for order in ((0, 1), (1, 0)):
        exact = [eff_row("softmax", True, 800, 3.0, 40.0, pass_="serve_step", state_bytes_per_user=100000),
                 eff_row("sdpa", True, 800, 2.0, 45.0, pass_="serve_step", state_bytes_per_user=100000)]  # fmt: skip
        rows = [eff_row("elastic-causal", True, 800, 1.0, 40.0, pass_="serve_step", state_bytes_per_user=1000)] + [exact[i] for i in order]
        t = V.claims_table(pd.DataFrame(rows), pd.DataFrame(columns=["status"]), pd.DataFrame())
        r = claim(t, "memory", "elastic-causal vs best-exact", "serving (serve_step)")
        assert r["measurement"].startswith("99.0% less state bytes per user than sdpa"), r["measurement"]
        assert r["rows"].split()[1] == "sdpa-True-800-serve_step"


def test_a_memory_increase_reads_as_more():
    rows = [eff_row("elastic-causal", True, 256, 1.0, 80.0), eff_row("softmax", True, 256, 1.0, 40.0),
            eff_row("elastic-causal", True, 8192, 1.0, 50.0), eff_row("softmax", True, 8192, 1.0, 100.0)]  # fmt: skip
    t = V.claims_table(pd.DataFrame(rows), pd.DataFrame(columns=["status"]), pd.DataFrame())
    m = claim(t, "memory", "elastic-causal vs softmax")["measurement"]
    assert m == "50.0% less peak memory than softmax at N=8192 (at N=256: 100.0% more)"


# ----------------------------------------------------------------------------- accuracy rules


def acc_row(model: str, seed: int, ndcg: float, objective: str = "all", memory_size: object = "") -> dict:
    return dict(status="ok", model=model, seed=seed, objective=objective, seq_len=200, memory_size=memory_size, options="",
                config_hash=f"{model}-{memory_size}-{objective}-{seed}", **{"ndcg@10": ndcg, "hr@10": 2 * ndcg})  # fmt: skip


@pytest.mark.parametrize(
    "elastic, softmax, verdict",
    [
        ((0.20, 0.201), (0.15, 0.151), "holds"),
        ((0.15, 0.151), (0.20, 0.201), "does not hold"),
        ((0.15, 0.20), (0.16, 0.19), "does not hold"),  # not separable
        ((0.20,), (0.15, 0.151), "not measurable here"),  # one seed
    ],
)
def test_accuracy_rule(elastic, softmax, verdict):
    acc = pd.DataFrame([acc_row("elastic-causal", s, v) for s, v in enumerate(elastic)] + [acc_row("softmax", s, v) for s, v in enumerate(softmax)])
    r = claim(V.claims_table(pd.DataFrame(), acc, pd.DataFrame()), "accuracy", "elastic-causal vs softmax", "causal family (objective all)")
    assert r["verdict"] == verdict
    if verdict == "does not hold" and abs(elastic[0] - softmax[0]) < 0.02:
        assert "not separable" in r["why"]


def test_a_second_dataset_is_a_family_of_its_own_with_its_own_bank_row():
    beauty = [{**acc_row("elastic", s, v, "last", m), "seq_len": 50, "dataset": "beauty", "config_hash": f"b-{m}-{s}"}
              for m, s, v in ((0, 0, 0.030), (0, 1, 0.031), (65536, 0, 0.040), (65536, 1, 0.041))]  # fmt: skip
    ml1m = [acc_row("elastic", s, 0.08, "last", m) for m in (0, 65536) for s in (0, 1)]
    acc = pd.DataFrame(beauty + [{**r, "dataset": "ml-1m"} for r in ml1m])
    assert V.family_of(acc.iloc[0]) == "last, N=50, beauty" and V.family_of(acc.iloc[-1]) == "last, N=200"
    assert V.family_setting("last, N=50, beauty") == "Amazon Beauty, objective last, N=50"
    rows = pd.DataFrame(V.capacity_claims(acc, pd.DataFrame()))
    ml, bt = rows[rows["regime"] == "accuracy bought by the bank"].iloc[0], rows[rows["regime"] == "accuracy bought by the bank (Amazon Beauty)"].iloc[0]
    assert ml["verdict"] == "does not hold" and ml["setting"].startswith("ML-1M, objective last, N=200")  # equal seeds: not separable
    assert bt["verdict"] == "holds" and bt["setting"].startswith("Amazon Beauty, objective last, N=50") and "b-65536-0" in bt["rows"]


def test_a_tiny_accuracy_gap_does_not_fill_the_panel(tmp_path, monkeypatch):
    acc = pd.DataFrame([acc_row("softmax", 0, 0.08703, "last"), acc_row("elastic", 0, 0.08692, "last", 65536)])
    spans = []
    real = VF._min_span
    monkeypatch.setattr(VF, "_min_span", lambda ax, centre, rel=0.10: (real(ax, centre, rel), spans.append(ax.get_ylim())))
    VF.plot_accuracy_families(acc, tmp_path)
    VF.plot_memory_bank(acc, pd.DataFrame(), tmp_path)
    assert len(spans) == 2 and all(hi - lo >= 0.0086 for lo, hi in spans)  # each accuracy panel, in both figures
    monkeypatch.undo()
    fig, ax = VF.plt.subplots()
    ax.scatter([0, 1], [0.08703, 0.08692])
    VF._min_span(ax, 0.087)
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.0087 - 1e-12 and lo < 0.08692 and hi > 0.08703
    ax.set_ylim(0.0, 0.2)
    VF._min_span(ax, 0.087)  # an axis already wide enough is left alone
    assert ax.get_ylim() == (0.0, 0.2)
    VF.plt.close(fig)


def test_non_causal_softmax_is_a_model_of_its_own_in_the_last_position_family():
    acc = pd.DataFrame([acc_row("softmax", s, 0.087, "last") for s in (0, 1)] + [acc_row("elastic", s, 0.087, "last", 65536) for s in (0, 1)]
                       + [{**acc_row("softmax", s, v, "last"), "causal": "False", "options": "causal=False", "config_hash": f"nc-{s}"}
                          for s, v in ((0, 0.080), (1, 0.081))])  # fmt: skip  (as a CSV row reads back)
    assert V.model_label(acc.iloc[-1]) == "softmax (non-causal)" and V.model_label(acc.iloc[0]) == "softmax"
    r = claim(V.claims_table(pd.DataFrame(), acc, pd.DataFrame()), "accuracy", "elastic M=64k vs softmax (non-causal)",
              "last-position family (objective last), like for like in causality: softmax without its causal mask")
    assert "nc-0" in r["rows"] and "0.0805" in r["measurement"]


def test_pending_accuracy_cells_are_not_measurable():
    t = V.claims_table(pd.DataFrame(), pd.DataFrame(columns=["status"]), pd.DataFrame())
    acc = t[t["claim"].isin(["accuracy", "capacity"])]
    assert len(acc) >= 4 and set(acc["verdict"]) == {"not measurable here"} and acc["why"].str.contains("pending").all()


def test_capacity_rule_needs_accuracy_from_the_bank_and_flat_latency():
    acc = pd.DataFrame([acc_row("elastic", s, v, "last", 65536) for s, v in enumerate((0.12, 0.121))]
                       + [acc_row("elastic", s, v, "last", 0) for s, v in enumerate((0.10, 0.101))])  # fmt: skip
    flat = [eff_row("elastic", False, n, lat, 10.0, memory_size=m, options=f"memory_size={m}", config_hash=f"b{m}{n}")
            for n in (200, 8192) for m, lat in ((0, 1.0), (1 << 20, 1.05))]  # fmt: skip
    t = V.claims_table(pd.DataFrame(), acc, pd.DataFrame(flat))
    assert claim(t, "capacity", "elastic M=64k vs elastic M=0", "accuracy bought by the bank")["verdict"] == "holds"
    assert claim(t, "capacity", "elastic M=1m vs M=0", "inference cost vs bank size")["verdict"] == "holds"
    bumpy = flat + [eff_row("elastic", False, 200, 1.3, 10.0, memory_size=4096, options="memory_size=4096", config_hash="b4k")]
    r = claim(V.claims_table(pd.DataFrame(), acc, pd.DataFrame(bumpy)), "capacity", "elastic M=4k, 1m vs M=0", "inference cost vs bank size")
    assert r["verdict"] == "does not hold" and "x1.30" in r["measurement"] and "M=4k" in r["measurement"]  # any bank size counts
    steep = [dict(r, latency_ms_p50=r["latency_ms_p50"] * (2 if r["memory_size"] else 1), latency_samples_ms="") for r in flat]
    t = V.claims_table(pd.DataFrame(), acc, pd.DataFrame(steep))
    assert claim(t, "capacity", "elastic M=1m vs M=0", "inference cost vs bank size")["verdict"] == "does not hold"


# ----------------------------------------------------------------------------- the preset


def tiny_preset(tmp_path, epochs: int = 2) -> str:
    path = tmp_path / "v.yaml"
    path.write_text(
        f"""name: v
data: "{DATA}"
train_preset: quick
threads: 1
train: {{epochs: {epochs}, patience: 5, max_len: 12, d_model: 8, heads: 1, train_on_valid: false}}
accuracy:
  - {{name: causal, models: "softmax,elastic-causal", seeds: "0,1", train: {{objective: all}}}}
  - {{name: last, models: elastic, memory_size: "0,1k", seeds: "0", train: {{objective: last}}}}
sweeps:
  - {{name: throughput, models: "softmax,elastic-causal", seq_len: "32", pass: infer, repeats: 3, min_time: 0.01, process_repeats: 1}}
verdict: true
"""
    )
    return str(path)


def test_verdict_preset_runs_resumes_and_rebuilds_from_csv(tmp_path):
    name = tiny_preset(tmp_path)
    res = run_figures(name, results_root=tmp_path / "results", out_root=tmp_path / "reports", progress=False)
    acc = load_results(tmp_path / "results" / "v" / "accuracy.csv")
    assert len(acc) == 6 and (acc["status"] == "ok").all() and (acc["cpu_threads"] == 1).all()
    assert set(acc["objective"]) == {"all", "last"}
    runs = list((tmp_path / "results" / "v" / "runs").glob("*.json"))
    assert len(runs) == 6 and all(len(json.loads(p.read_text())["history"]) == 2 for p in runs)
    assert not list((tmp_path / "results" / "v" / "checkpoints").glob("*.pt"))  # removed once the row is written
    out = tmp_path / "reports" / "v"
    for f in ("claims.md", "claims.tex", "claims.csv", "verdict.md", "accuracy-families.png", "learning-curves.png", "long-histories.png",
              "efficiency/latency-infer.png"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "claims.csv")
    assert set(table["claim"]) == {"memory", "speed", "accuracy", "capacity"} and set(table["verdict"]) <= set(V.VERDICTS)
    assert "nothing: every planned cell has a row" in (out / "verdict.md").read_text()
    before = (out / "claims.csv").read_bytes()
    run_figures(name, from_csv=True, results_root=tmp_path / "results", out_root=tmp_path / "reports", progress=False)
    assert (out / "claims.csv").read_bytes() == before
    assert res.manifest is not None


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path):
    """A cell killed after epoch 1 of 3 resumes at epoch 2 (its checkpoint), and the pending list says so."""
    from elastic_bench.data.resolve import load_dataset
    from elastic_bench.runs.accuracy import expand_accuracy
    from elastic_bench.train.trainer import train

    name = tiny_preset(tmp_path, epochs=3)
    preset = load_preset(name, tmp_path / "results")
    plan, _ = plan_preset(preset, dry_run=True, efficiency=False)
    spec = plan[0][1]
    cfg = expand_accuracy(spec)[0]
    ckpt = tmp_path / "results" / "v" / "checkpoints" / f"{cfg.config_hash()}.pt"
    ckpt.parent.mkdir(parents=True)
    train(dataclasses.replace(cfg, epochs=1), load_dataset(DATA), ckpt)  # "killed" after one epoch: its checkpoint stays
    payload = torch.load(ckpt, map_location="cpu", weights_only=False)
    payload["state"]["wall_s"] = 1000.0  # as if the first segment had taken 1000 s
    torch.save(payload, ckpt)
    assert any("1/3 epochs in its checkpoint (resumes there), 1000.0 s per epoch" in p for p in pending_cells(preset))
    keys = [parse_pending(p) for p in pending_cells(preset)]  # the budget reads back the cell each line names
    opts = ";".join(sorted(f"{k}={v}" for k, v in cfg.options))
    assert CellKey(cfg.model, opts, cfg.objective, cfg.max_len, cfg.data) in keys and None not in keys
    # the plan table printed before a run says the same, cell by cell
    from rich.console import Console

    from elastic_bench.runs.accuracy import print_accuracy_plan

    console = Console(record=True, width=200)
    print_accuracy_plan(expand_accuracy(spec), {}, spec, console)
    assert "pending: 1/3 epochs in its checkpoint" in console.export_text()
    run_figures(name, results_root=tmp_path / "results", out_root=tmp_path / "reports", progress=False)
    hist = json.loads((tmp_path / "results" / "v" / "runs" / f"{cfg.model}-{cfg.config_hash()}.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    # the row's wall time is the run's, both segments, not the resumed process's alone
    row = load_results(tmp_path / "results" / "v" / "accuracy.csv").set_index("config_hash").loc[cfg.config_hash()]
    assert 1000 < row["wall_s"] < 1100
    assert pending_cells(preset) == []


def test_a_pending_line_names_the_objective_the_trainer_will_use(tmp_path):
    """``auto`` is resolved as the trainer resolves it, so the budget finds the finished rows (which
    record ``all`` or ``last``) of the same family."""
    path = tmp_path / "auto.yaml"
    path.write_text(f"""name: auto
data: "{DATA}"
train_preset: quick
accuracy:
  - {{name: mixed, models: "elastic,elastic-causal", seeds: "0"}}
verdict: true
""")
    lines = pending_cells(load_preset(str(path), tmp_path / "results"))
    objectives = {parse_pending(p).model: parse_pending(p).objective for p in lines}
    assert objectives == {"elastic": "last", "elastic-causal": "all"}


# ----------------------------------------------------------------------------- labels


def test_published_column_only_for_the_published_protocol():
    ref = train_preset("sasrec-ml1m")
    assert published_reference(ref) is not None
    assert published_reference(dataclasses.replace(ref, epochs=20, seed=3)) is not None  # stopping rules and seed may differ
    for change in (dict(eval="sampled:100"), dict(data="beauty"), dict(model="elastic-causal"), dict(train_on_valid=False), dict(objective="last"), dict(causal=False)):
        assert published_reference(dataclasses.replace(ref, **change)) is None, change


def test_train_prints_protocol_labels_as_typed(tmp_path):
    data = "synthetic:n_users=60,n_items=300,lengths=lognormal:12,seed=0"
    out = tmp_path / "t.csv"
    res = runner.invoke(cli.app, ["train", "--data", data, "--epochs", "1", "--d-model", "8", "--max-len", "12", "--eval", "sampled:20:uniform", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "sampled:20:uniform" in text and "\N{HUNDRED POINTS SYMBOL}" not in res.output
    assert "published SASRec" not in res.output
    res = runner.invoke(cli.app, ["train", "--data", data, "--epochs", "1", "--d-model", "8", "--max-len", "12", "--eval", "sampled:100:uniform", "--out", str(out)])
    assert res.exit_code == 0 and "sampled:100:uniform" in " ".join(res.output.split()) and "\N{HUNDRED POINTS SYMBOL}" not in res.output


def test_gpu_rows_become_rows_of_their_own(tmp_path):
    from elastic_bench.store import ResultsStore

    gpu = tmp_path / "gpu" / "2026-12-01"
    gpu.mkdir(parents=True)
    (gpu / "kernel-check.csv").write_text("name,status\nscan,ok\n")  # another schema: passed over
    store = ResultsStore(gpu / "gpu-sweep.csv")
    store.open()
    for r in (eff_row("elastic-causal", True, 8192, 1.0, 10.0), eff_row("softmax", True, 8192, 3.0, 200.0)):
        store.append({**r, "device": "cuda", "device_name": "NVIDIA H200", "task": "efficiency"})
    store.close()
    (tmp_path / "res").mkdir()
    VR.write_verdict(tmp_path / "res", tmp_path / "out", [], gpu_dir=tmp_path / "gpu")
    t = pd.read_csv(tmp_path / "out" / "claims.csv")
    h200 = t[t["setting"].astype(str).str.contains("H200")]
    assert set(h200["claim"]) == {"memory", "speed"} and (h200[h200["comparison"] == "elastic-causal vs softmax"]["verdict"] == "holds").all()
    assert not t["regime"].str.startswith("GPU").any()  # the placeholder row is gone once GPU rows exist


def test_the_shipped_verdict_preset_plans_every_cell(tmp_path):
    """verdict-cpu as committed: 5 sweeps first, then 24 training cells in 12 groups, one thread, one budget."""
    from elastic_bench.runs.accuracy import expand_accuracy

    preset = load_preset("verdict-cpu", tmp_path)
    plan, commands = plan_preset(preset, dry_run=True)
    kinds = [k for k, _ in plan]
    assert kinds == ["efficiency"] * 5 + ["accuracy"] * 12
    # every sweep's longest N gets process repeats: the bank's cost is judged at N=200 and at N=8192,
    # in 9 rounds (a few percent against a 1.10x line), and so is its training step; the other sweeps keep the default 3
    bank = [s for k, s in plan if k == "efficiency" and s.models == ("elastic",) and s.passes == ("infer",)]
    assert sorted(n for s in bank for n in s.seq_lens) == [200, 8192] and all(len(s.seq_lens) == 1 and s.process_repeats == 9 for s in bank)
    step = [s for k, s in plan if k == "efficiency" and s.models == ("elastic",) and s.passes == ("train_step",)]
    assert len(step) == 1 and step[0].process_repeats == 9
    assert all(s.process_repeats == 3 for k, s in plan if k == "efficiency" and s not in bank + step)
    cells = [c for k, s in plan if k == "accuracy" for c in expand_accuracy(s)]
    assert len(cells) == len({c.config_hash() for c in cells}) == 24
    # softmax without its causal mask in the last-position family, 2 seeds: like for like with elastic
    assert sorted(c.seed for c in cells if c.causal is False and c.model == "softmax" and c.objective == "last") == [0, 1]
    assert all(c.causal is None for c in cells if c.model != "softmax" or c.objective != "last" or c.causal is not False)
    # item 3's second dataset: Amazon Beauty in SASRec's Beauty shape, the same ablation design as ML-1M's
    beauty = [c for c in cells if c.data == "beauty"]
    assert len(beauty) == 6 and {(c.max_len, c.dropout, c.objective, c.model, c.epochs, c.train_on_valid) for c in beauty} == {(50, 0.5, "last", "elastic", 56, False)}
    assert sorted((dict(c.options)["memory_size"], c.seed) for c in beauty) == [(0, 0), (0, 1), (4096, 0), (65536, 0), (65536, 1), (1 << 20, 0)]
    # the slow cells (a 1m bank's dense updates, N=800) run after every short bank cell
    slow = [i for i, c in enumerate(cells) if dict(c.options).get("memory_size") == 1 << 20 or c.max_len == 800]
    short_bank = [i for i, c in enumerate(cells) if c.model == "elastic" and dict(c.options).get("memory_size") in (0, 4096, 65536)]
    assert len(slow) == 4 and min(slow) > max(short_bank)
    planned = {c.config_hash() for c in cells}  # every dataset's cells
    cells = [c for c in cells if c.data != "beauty"]
    # the cells the issue requires run before the optional second seed of the linear baseline
    assert (cells[-1].model, cells[-1].seed) == ("linear", 1) and all(c.model != "linear" or c.seed == 0 for c in cells[:-1])
    # two seeds of every model an accuracy verdict compares (softmax, elastic-causal, linear; elastic at 0 and 64k)
    seeds: dict[tuple, set] = {}
    for c in cells:
        if c.max_len == 200:
            seeds.setdefault((c.model, c.objective, dict(c.options).get("memory_size"), c.causal), set()).add(c.seed)
    assert all(len(v) >= 2 for k, v in seeds.items() if k[2] not in (4096, 1 << 20)), seeds
    assert {c.epochs for c in cells} == {56} and {c.patience for c in cells} == {10} and not any(c.train_on_valid for c in cells)
    assert all(s.threads == 1 and s.checkpoint_dir for k, s in plan if k == "accuracy")
    assert sorted({c.max_len for c in cells}) == [200, 800]
    assert {dict(c.options).get("memory_size") for c in cells if c.model == "elastic"} == {0, 4096, 65536, 1 << 20}
    # every committed training row is one of the planned cells: a change that moved a hash would orphan it
    committed = Path(__file__).resolve().parents[1] / "results" / "verdict-cpu" / "accuracy.csv"
    if committed.is_file():
        assert set(load_results(committed)["config_hash"]) <= planned


def test_the_seed_table_keeps_four_decimals_and_names_its_spread():
    stats = V.seed_stats(pd.DataFrame([acc_row("elastic", 0, 0.08545, "last", 0), acc_row("elastic", 1, 0.0786, "last", 0),
                                       acc_row("softmax", 0, 0.082, "last")]))  # fmt: skip
    t = V._seed_table(stats).set_index("label")
    assert t.loc["elastic M=0", "mean"] == "0.0820" and t.loc["elastic M=0", "std across seeds"] == "0.0048"
    assert t.loc["softmax", "mean"] == "0.0820" and t.loc["softmax", "std across seeds"] == "–"  # one seed: no spread


def test_the_bank_figure_puts_each_dataset_against_its_own_no_bank_mean(tmp_path, monkeypatch):
    beauty = [{**acc_row("elastic", s, v, "last", m), "seq_len": 50, "dataset": "beauty"}
              for m, s, v in ((0, 0, 0.030), (0, 1, 0.034), (65536, 0, 0.040))]  # fmt: skip
    ml1m = [{**acc_row("elastic", s, v, "last", m), "dataset": "ml-1m"} for m, s, v in ((0, 0, 0.08), (65536, 0, 0.088))]
    rel = VF.bank_accuracy(pd.DataFrame(beauty + ml1m))
    assert rel["no_bank"].tolist() == pytest.approx([0.032, 0.032, 0.032, 0.08, 0.08])
    assert rel["vs_no_bank_pct"].tolist() == pytest.approx([-6.25, 6.25, 25.0, 0.0, 10.0])
    axes = []
    real = VF.save_figure
    monkeypatch.setattr(VF, "save_figure", lambda fig, *a, **k: (axes.append(fig.axes[0].get_ylabel()), real(fig, *a, **k))[1])
    VF.plot_memory_bank(pd.DataFrame(beauty + ml1m), pd.DataFrame(), tmp_path)  # two datasets: relative
    VF.plot_memory_bank(pd.DataFrame(ml1m), pd.DataFrame(), tmp_path)  # one: the score itself
    VF.plot_memory_bank(pd.DataFrame(beauty[2:] + ml1m), pd.DataFrame(), tmp_path)  # Beauty has no bank-less run yet
    assert axes == ["test NDCG@10 vs no bank (%)", "test NDCG@10 (objective last)", "test NDCG@10 (objective last)"]


def test_the_bank_figure_draws_relative_points_and_the_accuracy_models_parameters(tmp_path, monkeypatch):
    acc = [{**acc_row("elastic", s, v, "last", m), "dataset": d, "seq_len": n, "params": p}
           for d, n, m, s, v, p in (("ml-1m", 200, 0, 0, 0.08, 259150), ("ml-1m", 200, 0, 1, 0.09, 259150), ("ml-1m", 200, 65536, 0, 0.0935, 3551400),
                                    ("beauty", 50, 0, 0, 0.036, 671400), ("beauty", 50, 65536, 0, 0.0324, 3963650))]  # fmt: skip
    # the sweep's model has other embeddings (319,850 weights without a bank); each bank adds the same M*d either way
    bank = [eff_row("elastic", False, n, 1.0, 10.0, memory_size=m, options=f"memory_size={m}", config_hash=f"b{m}{n}", params=p + 60700)
            for n in (200, 8192) for m, p in ((0, 259150), (65536, 3551400), (1 << 20, 259150 + 50 * (1 << 20)))]  # fmt: skip
    drawn = {}
    real = VF.save_figure

    def spy(fig, rows, *a, **k):
        ax = fig.axes[0]
        drawn["points"] = sorted(round(float(y), 6) for c in ax.collections for _, y in c.get_offsets())
        drawn["top"] = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
        drawn["rows"] = rows
        return real(fig, rows, *a, **k)

    monkeypatch.setattr(VF, "save_figure", spy)
    VF.plot_memory_bank(pd.DataFrame(acc), pd.DataFrame(bank), tmp_path)
    # ML-1M against its no-bank mean 0.085: -5.88 %, +5.88 %, +10 %; Beauty against 0.036: 0, -10 %
    assert drawn["points"] == pytest.approx(sorted([-100 / 17, 100 / 17, 10.0, 0.0, -10.0]), abs=1e-4)
    assert drawn["top"] == ["0.26M", "3.55M", "52.69M"]  # the accuracy model's counts, the 1m one extrapolated by the sweep
    assert set(drawn["rows"]["kind"]) == {"latency", "accuracy"} and (tmp_path / "memory-bank.csv").is_file()
    assert drawn["rows"][drawn["rows"]["kind"] == "accuracy"]["vs_no_bank_pct"].notna().all()


def test_long_histories_figure_draws_every_model_and_length(tmp_path):
    long = pd.DataFrame([{"model": m, "max_len": n, "test NDCG@10": v, "median epoch s": t, "peak memory MB": mem}
                         for m, n, v, t, mem in (("softmax", 200, 0.15, 55.0, 995.0), ("elastic-causal", 200, 0.147, 64.0, 870.0),
                                                 ("softmax", 800, 0.16, 120.0, 3654.0))])  # elastic-causal at 800 still training  # fmt: skip
    paths = VF.plot_long_histories(long, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf", ".csv"] and all(p.stat().st_size > 0 for p in paths)
    assert len(pd.read_csv(paths[2])) == 3


def test_learning_curves_keep_datasets_apart_at_the_same_length(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    for data in ("ml-1m", "beauty"):
        cfg = {"data": data, "max_len": 50, "seed": 0, "options": {"memory_size": 0}}
        hist = [{"epoch": e, "epoch_s": 1.0, "valid_ndcg@10": 0.01 * e} for e in (1, 2)]
        (runs / f"elastic-{data}.json").write_text(json.dumps({"model": "elastic", "objective": "last", "config": cfg, "history": hist}))
    curves = VF.learning_curves(runs)
    assert sorted(curves["family"].unique()) == ["last, N=50", "last, N=50, beauty"]
    titles = []
    real = VF.save_figure
    monkeypatch.setattr(VF, "save_figure", lambda fig, *a, **k: (titles.extend(ax.get_title() for ax in fig.axes), real(fig, *a, **k))[1])
    VF.plot_learning_curves(curves, tmp_path)
    assert titles == ["ML-1M, objective last, N=50", "Amazon Beauty, objective last, N=50"]


def test_the_training_step_rows_name_the_optimiser_their_rows_ran():
    def step(m, sparse, lat, opt):
        detail = f"torch:sdpa; optimizer {opt}" if opt else "torch:sdpa"
        return eff_row("elastic", False, 200, lat, 10.0, pass_="train_step", memory_size=m, options=f"memory_size={m};sparse_grad={sparse}",
                       config_hash=f"t{m}{sparse}", backend_detail=detail)  # fmt: skip

    bank = pd.DataFrame([step(0, False, 10.0, "AdamW fused"), step(1 << 20, False, 12.5, "AdamW fused"),
                         step(0, True, 10.0, "AdamW fused"), step(1 << 20, True, 10.4, "AdamW fused + SparseAdam")])  # fmt: skip
    acc = pd.DataFrame([acc_row("elastic", 0, 0.08, "last", 0)])
    rows = pd.DataFrame(V.capacity_claims(acc, bank)).set_index("regime")
    dense, sparse = rows.loc["training step vs bank size (dense bank gradients)"], rows.loc["training step vs bank size (sparse bank gradients)"]
    assert (dense["setting"], dense["verdict"]) == ("train_step (AdamW fused)", "does not hold") and dense["measurement"].startswith("x1.25")
    assert (sparse["setting"], sparse["verdict"]) == ("train_step (AdamW fused + SparseAdam)", "holds")
    old = [step(0, False, 10.0, ""), step(1 << 20, False, 22.3, "")]  # rows from before the optimiser was named
    def setting(rows):
        return pd.DataFrame(V.capacity_claims(acc, pd.DataFrame(rows))).set_index("regime").loc["training step vs bank size (dense bank gradients)", "setting"]

    assert setting(old) == "train_step (AdamW, implementation not recorded; SparseAdam for a sparse bank)"
    mixed = [step(0, False, 10.0, "AdamW for-loop"), step(1 << 20, False, 12.5, "AdamW fused")]  # a store re-measured in part
    assert setting(mixed) == "train_step (AdamW fused, vs M=0 with AdamW for-loop: the implementations differ)"


def test_the_long_history_table_reads_stopped_from_the_reason_whatever_follows_it():
    reasons = ["eval=full; exclude_history=input; best_epoch=54/56; stopped=epochs",
               "eval=full; best_epoch=40/50; stopped=early-stop (no better validation NDCG@10 in 10 evaluations); optimizer=AdamW fused"]  # fmt: skip
    acc = pd.DataFrame([{**acc_row(m, 0, 0.15), "seq_len": 800, "peak_mem_mb": 900.0, "cpu_threads": 1, "reason": why}
                        for m, why in zip(("softmax", "elastic-causal"), reasons)])  # fmt: skip
    table = VF.long_history_table(acc, pd.DataFrame()).set_index("model")
    assert table.loc["softmax", "stopped"] == "epochs" and table.loc["elastic-causal", "stopped"].startswith("early-stop (no better")
    # without histories, the optimiser comes from the row's reason: epoch times compare only under one implementation
    assert (table.loc["softmax", "optimizer"], table.loc["elastic-causal", "optimizer"]) == ("not recorded", "AdamW fused")
    curves = pd.DataFrame([{"run": "softmax-softmax--all-0", "epoch": e, "epoch_s": 10.0, "optimizer": o} for e, o in ((1, ""), (2, "AdamW fused"))])
    assert VF.long_history_table(acc, curves).set_index("model").loc["softmax", "optimizer"] == "not recorded (epoch 1); AdamW fused (epoch 2)"
