"""Like-for-like comparisons in reports: causality, provenance, CIs, the no-mixing floor, the claim
check against the best exact backend, FLOPs labels and footnotes."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from elastic_bench.report.accounting import flops_is_partial, format_flops
from elastic_bench.report.compare import MATCH_KEYS, is_exact, is_flash_class, provenance_mismatches, series_labels, with_baseline
from elastic_bench.report.latex import latency_marks
from elastic_bench.report.figure_kit import draw_lines, efficiency_rows, footnote
from elastic_bench.report.markdown import CPU_NOTE, claim_check, missing_alike, throughput_table, write_report
from elastic_bench.store import COLUMNS, format_row, header_line, load_results

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_bench_results", ROOT / "fixtures" / "make_bench_results.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def _load(tmp_path, rows, name="r.csv", extra_cols=()):
    path = tmp_path / name
    with open(path, "w") as fh:
        fh.write(header_line())
        for r in rows:
            fh.write(format_row({k: v for k, v in r.items() if k in COLUMNS}))
    return load_results(path)


def _infer(df, model, n, causal):
    return df[(df["model"] == model) & (df["pass"] == "infer") & (df["seq_len"] == n) & (df["causal"] == str(causal))].iloc[0]


def test_speedups_only_between_rows_of_the_same_causality(tmp_path):
    df = with_baseline(_load(tmp_path, make.rows()), "softmax")
    e = _infer(df, "elastic", 1024, False)
    assert e["speedup"] == pytest.approx(_infer(df, "softmax", 1024, False)["latency_ms_p50"] / e["latency_ms_p50"])
    c = _infer(df, "elastic-causal", 1024, True)
    assert c["speedup"] == pytest.approx(_infer(df, "softmax", 1024, True)["latency_ms_p50"] / c["latency_ms_p50"])
    # only causal baselines measured: the non-causal elastic has nothing to be compared with
    only_causal = [r for r in make.rows() if not (r["model"] == "softmax" and r["causal"] is False)]
    df = with_baseline(_load(tmp_path, only_causal, "c.csv"), "softmax")
    assert np.isnan(_infer(df, "elastic", 1024, False)["speedup"])
    assert "causal" in MATCH_KEYS


def test_every_label_names_its_causality(tmp_path):
    df = _load(tmp_path, make.rows(floor=True))
    labels = set(series_labels(df))
    assert {"elastic (non-causal)", "softmax (causal)", "softmax (non-causal)", "no-mixing (floor)"} <= labels
    assert "softmax (causal, obj=all)" in labels and "elastic (non-causal, obj=last)" in labels
    assert all(("causal" in lab) or ("floor" in lab) for lab in labels)


def test_rows_from_other_code_are_not_paired_and_are_reported(tmp_path):
    rows = list(make.rows())
    for r in rows:
        if r["model"] == "elastic" and r["pass"] == "infer" and r["seq_len"] == 512:
            r["git_sha"] = "fedcba987654"
    df = _load(tmp_path, rows)
    with pytest.warns(UserWarning, match="git_sha/torch"):
        out = with_baseline(df, "softmax")
    assert np.isnan(_infer(out, "elastic", 512, False)["speedup"])
    assert not np.isnan(_infer(out, "elastic", 1024, False)["speedup"])
    bad = provenance_mismatches(out, "softmax")
    assert bad[["model", "seq_len", "git_sha", "baseline git_sha"]].values.tolist() == [["elastic", 512, "fedcba987654", "0123456789ab"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_baseline(_load(tmp_path, make.rows(), "clean.csv"), "softmax")  # same code everywhere: no warning


def test_speedup_ci_from_samples_and_none_invented_without(tmp_path):
    df = with_baseline(_load(tmp_path, make.rows()), "softmax")
    e = _infer(df, "elastic", 1024, False)
    assert e["speedup_ci_lo"] < e["speedup"] < e["speedup_ci_hi"]
    assert e["latency_ms_ci_lo"] <= e["latency_ms_p50"] <= e["latency_ms_ci_hi"]
    old = _load(tmp_path, make.rows(), "old.csv").drop(columns=["latency_samples_ms", "latency_ms_ci_lo", "latency_ms_ci_hi", "n_repeats"])
    out = with_baseline(old, "softmax")
    e = _infer(out, "elastic", 1024, False)
    assert not np.isnan(e["speedup"]) and np.isnan(e["speedup_ci_lo"]) and np.isnan(e["latency_ms_ci_lo"])
    cc = claim_check(efficiency_rows(old, "softmax"))
    assert cc["speed-up vs softmax"].str.endswith("(CI n/a)").all()


def test_floor_ratios_and_dashed_floor_line(tmp_path):
    df = efficiency_rows(_load(tmp_path, make.rows(floor=True)), "softmax")
    e = _infer(df, "elastic", 2048, False)
    f = _infer(df, "no-mixing", 2048, True)  # the floor matches either causality
    assert e["latency_vs_floor"] == pytest.approx(e["latency_ms_p50"] / f["latency_ms_p50"])
    assert e["peak_mem_vs_floor"] == pytest.approx(e["peak_mem_mb"] / f["peak_mem_mb"])
    assert e["latency_vs_floor_ci_lo"] < e["latency_vs_floor"] < e["latency_vs_floor_ci_hi"]
    assert np.isnan(f["latency_vs_floor"])
    fig, ax = plt.subplots()
    draw_lines(ax, df[(df["pass"] == "infer") & (df["status"] == "ok")], "latency_ms_p50")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert lines["no-mixing (floor)"].get_linestyle() == "--" and lines["elastic (non-causal)"].get_linestyle() == "-"
    plt.close(fig)


def test_report_sections_footnotes_and_floor(tmp_path):
    path = write_report([_write(tmp_path, make.rows(floor=True))], out_dir=tmp_path / "rep")
    md = path.read_text()
    assert "Latency / no-mixing floor latency" in md and "Peak memory / no-mixing floor peak memory" in md
    assert "## Provenance" in md and "No row lost its baseline" in md
    assert "lowest-memory exact" in md and "fastest exact" in md
    for part in ("tokens/batch 64k", "padding full", "causality causal & non-causal", "n = 10 timing samples in 2 repeat process(es)"):
        assert part in md, part
    assert "elastic (non-causal)" in md and "[95 % CI" in md
    assert "Throughput (TFLOP/s" in md and "(counter)" in md


def _write(tmp_path, rows, name="f.csv"):
    path = tmp_path / name
    with open(path, "w") as fh:
        fh.write(header_line())
        for r in rows:
            fh.write(format_row({k: v for k, v in r.items() if k in COLUMNS}))
    return path


def _cpu_rows():
    """softmax (slow, big), sdpa-math (fastest exact, not flash-class), sdpa-flash (lowest memory), elastic: non-causal CPU rows."""
    spec = {"softmax": (40.0, 100.0), "sdpa-math": (10.0, 90.0), "sdpa-flash": (12.0, 20.0), "elastic": (8.0, 30.0)}
    for i, (m, (lat, mem)) in enumerate(spec.items()):
        yield dict(make.ENV, device="cpu", device_name="x86", cpu_threads=1, model=m, causal=False, objective="", loss="", **{"pass": "infer"},
                   batch=4, seq_len=1024, status="ok", latency_ms_p50=lat, peak_mem_mb=mem, act_mem_mb=mem - 5, config_hash=f"{i:016x}",
                   flops=int(1e9), flops_method="partial" if m == "sdpa-flash" else "counter+analytic", n_samples=10,
                   latency_samples_ms=";".join(str(lat * (1 + d)) for d in (-0.02, -0.01, 0, 0.01, 0.02)))  # fmt: skip


def test_claim_check_judges_against_the_best_exact_and_marks_cpu(tmp_path):
    assert is_exact("sdpa-math") and not is_flash_class("sdpa-math") and is_flash_class("sdpa") and not is_exact("linear")
    df = efficiency_rows(_load(tmp_path, _cpu_rows()), "softmax")
    cc = claim_check(df).iloc[0]
    assert cc["fastest exact"] == "sdpa-math" and cc["speed-up vs fastest exact"].startswith("×1.25 [")
    assert cc["lowest-memory exact"] == "sdpa-flash" and cc["peak mem reduction vs lowest-memory exact"] == "-50 %"
    assert cc["speed-up vs softmax"].startswith("×5.00") and cc["peak mem reduction vs softmax"] == "70 %"
    assert cc["meets claim vs softmax (×2.7, 90%)"] == "speed yes, memory no" and cc["meets claim vs best exact"] == "speed no, memory no"
    assert cc["evidence"] == CPU_NOTE and cc["model"] == "elastic (non-causal)"


def test_missing_alike_names_what_has_no_baseline(tmp_path):
    rows = [r for r in make.rows() if not (r["model"] == "softmax" and r["causal"] is False)]
    df = efficiency_rows(_load(tmp_path, rows), "softmax")
    lines = missing_alike(df)
    assert len(lines) == 1 and lines[0].startswith("`elastic (non-causal)`") and "256, 512, 1024, 2048" in lines[0]


def test_flops_labels_never_call_a_partial_count_complete(tmp_path):
    assert format_flops(2.5, "partial", "{:.2f}") == "≥2.50 (partial)" and format_flops(2.5, "counter", "{:.2f}") == "2.50 (counter)"
    assert format_flops(1.0, "", "{:.1f}") == "≥1.0 (method not recorded)" and flops_is_partial("failed:RuntimeError")
    assert not flops_is_partial("counter+analytic")
    df = efficiency_rows(_load(tmp_path, _cpu_rows()), "softmax")
    t = throughput_table(df)
    assert t["sdpa-flash (non-causal)"].iloc[0].startswith("≥") and t["sdpa-flash (non-causal)"].iloc[0].endswith("(partial)")
    assert t["elastic (non-causal)"].iloc[0] == "0.125 (counter+analytic)"


def test_footnote_names_batch_padding_causality_threads_and_n(tmp_path):
    df = _load(tmp_path, _cpu_rows())
    note = footnote(df, "softmax")
    for part in ("batch 4", "padding full", "causality non-causal", "1 CPU thread(s)", "n = 10 timing samples", "baseline softmax (same causality)"):
        assert part in note, (part, note)


def test_latex_latency_marks_use_the_bootstrap_test_and_need_samples():
    close = ";".join(str(10 + 0.1 * (i % 5)) for i in range(20))
    near = ";".join(str(10.05 + 0.1 * (i % 5)) for i in range(20))
    far = ";".join(str(13 + 0.1 * (i % 5)) for i in range(20))
    j = pd.DataFrame({"latency_ms_p50": [10.2, 10.25, 13.2, 14.0], "latency_samples_ms": [close, near, far, ""]})
    assert latency_marks(j) == ["best", "tie", "", ""]  # the last is untested (no samples): never called a tie


def test_rows_timed_on_different_heaps_are_not_paired(tmp_path):
    """A row timed on glibc's history-dependent heap and one on the steady heap (measure/steady_heap.py)
    measure different things: no speed-up between them."""
    rows = list(make.rows())
    for r in rows:
        r["timer_mode"] = "perf-counter+steady-heap"
        if r["model"] == "elastic" and r["pass"] == "infer" and r["seq_len"] == 512:
            r["timer_mode"] = "perf-counter"
    with pytest.warns(UserWarning):
        out = with_baseline(_load(tmp_path, rows), "softmax")
    assert np.isnan(_infer(out, "elastic", 512, False)["speedup"])
    assert not np.isnan(_infer(out, "elastic", 1024, False)["speedup"])
