"""Headline cells: interleaved repeats in fresh processes, pooled into one row, resumable."""

from __future__ import annotations

from elastic_bench.bench.bootstrap import parse_samples
from elastic_bench.bench.cells import expand
from elastic_bench.bench.repeats import RepeatLog, headline, interleaved, pool_rows
from elastic_bench.bench.spec import load_spec
from elastic_bench.bench.store import load_results


def _cells(tmp_path):
    spec = load_spec({"models": "softmax,linear", "seq_len": "16,32", "batch": "1", "n_items": "20", "causal": "yes", "out": str(tmp_path / "r.csv")})
    return spec, expand(spec)


def _ok(v):
    return {"status": "ok", "batch": 1, "seq_len": 32, "latency_samples_ms": ";".join(str(v + i / 10) for i in range(4)), "wall_s": 1.0}


def test_headline_is_the_longest_sequence(tmp_path):
    _, cells = _cells(tmp_path)
    assert {c.seq_len for c in headline(cells)} == {32} and len(headline(cells)) == 2


def test_repeats_are_interleaved_pooled_and_resumed(tmp_path):
    _, cells = _cells(tmp_path)
    heads = headline(cells)
    order = []

    def measure(cell, rnd):
        order.append(cell.model)
        return _ok(10.0 * (len(order)))

    log = RepeatLog(tmp_path / "r.csv")
    out = dict((c.model, row) for c, row in interleaved(heads, 3, measure, log))
    assert order == ["linear", "softmax"] * 3 or order == ["softmax", "linear"] * 3  # round by round
    row = out[heads[0].model]
    samples, groups = parse_samples(row["latency_samples_ms"])
    assert row["n_repeats"] == 3 and row["n_samples"] == 12 and sorted(set(groups.tolist())) == [0, 1, 2]
    assert row["latency_ms_ci_lo"] <= row["latency_ms_p50"] <= row["latency_ms_ci_hi"]
    assert row["wall_s"] == 3.0
    # an interrupted sweep resumes with the repeats it lacks: the log already holds all of them
    order.clear()
    again = dict((c.model, r) for c, r in interleaved(heads, 3, measure, log))
    assert order == [] and again[heads[0].model]["latency_samples_ms"] == row["latency_samples_ms"]
    order.clear()
    assert len(list(interleaved(heads, 4, measure, log))) == 2 and len(order) == 2  # one more round only


def test_a_failed_repeat_ends_the_cell_with_its_status(tmp_path):
    _, cells = _cells(tmp_path)
    calls = []

    def measure(cell, rnd):
        calls.append(cell.model)
        return {"status": "oom", "reason": "out of memory"} if len(calls) == 3 else _ok(5.0)

    rows = list(interleaved(headline(cells), 3, measure, RepeatLog(tmp_path / "x.csv")))
    statuses = sorted(r["status"] for _, r in rows)
    assert statuses == ["ok", "oom"] and len(calls) == 5  # the failed cell is not run again
    assert pool_rows([_ok(1.0), {"status": "error:X", "reason": "boom"}])["status"] == "error:X"


def test_a_sweep_measures_its_headline_cells_in_fresh_processes(tmp_path):
    from elastic_bench.bench.sweep import run_sweep

    spec = load_spec({"models": "linear", "seq_len": "16,32", "batch": "1", "n_items": "20", "causal": "yes", "repeats": "3",
                      "min_time": "0", "process_repeats": "2", "plot": "false", "out": str(tmp_path / "r.csv")})
    run_sweep(spec, progress=False)
    df = load_results(spec.out).set_index("seq_len")
    assert df.loc[32, "status"] == "ok" and df.loc[32, "n_repeats"] == 2 and df.loc[32, "n_samples"] == 6
    assert df.loc[16, "n_repeats"] == 1 and "|" not in df.loc[16, "latency_samples_ms"]
    assert "|" in df.loc[32, "latency_samples_ms"]
    assert len(RepeatLog(spec.out).load()[df.loc[32, "config_hash"]]) == 2


def test_a_script_without_a_main_guard_is_not_rerun_by_the_workers(tmp_path):
    """multiprocessing's spawn re-imports ``__main__``; the repeat workers must not."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    out = tmp_path / "r.csv"
    script.write_text(
        "from elastic_bench.bench.spec import load_spec\n"
        "from elastic_bench.bench.sweep import run_sweep\n"
        f"print('SCRIPT-RUN', flush=True)\n"
        f"run_sweep(load_spec({{'models': 'linear', 'seq_len': '16', 'batch': '1', 'n_items': '20', 'causal': 'yes', 'repeats': '3', "
        f"'min_time': '0', 'process_repeats': '2', 'plot': 'false', 'out': {str(out)!r}}}), progress=False)\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (res.stdout + res.stderr).count("SCRIPT-RUN") == 1
    assert load_results(out)["n_repeats"].tolist() == [2]
