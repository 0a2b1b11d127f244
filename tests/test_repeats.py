"""Headline cells: interleaved repeats in fresh processes, pooled into one row, resumable."""

from __future__ import annotations

from elastic_bench.measure.bootstrap import parse_samples
from elastic_bench.runs.grid import expand
from elastic_bench.measure.samples import pool_rows
from elastic_bench.runs.repeats import RepeatLog, headline, interleaved
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import load_results


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
    gen = interleaved(heads, 3, measure, log)
    first_cell, row = next(gen)  # the consumer has this row; the sweep is killed before appending it
    gen.close()
    other = [c.model for c in heads if c.model != first_cell.model][0]
    a, b = first_cell.model, other
    assert order == [a, b, b, a, a]  # round by round, each round starting one cell later (no cell always first)
    samples, groups = parse_samples(row["latency_samples_ms"])
    assert row["n_repeats"] == 3 and row["n_samples"] == 12 and sorted(set(groups.tolist())) == [0, 1, 2]
    assert row["latency_ms_ci_lo"] <= row["latency_ms_p50"] <= row["latency_ms_ci_hi"]
    assert row["wall_s"] == 3.0
    # the rerun resumes from the log: only the missing repeat runs, the same first row comes back
    order.clear()
    again = dict((c.model, r) for c, r in interleaved(heads, 3, measure, log))
    assert order == [other] and again[first_cell.model]["latency_samples_ms"] == row["latency_samples_ms"]
    assert log.load() == {}  # both rows taken: the log is empty


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
    from elastic_bench.runs.sweep import run_sweep

    spec = load_spec({"models": "linear", "seq_len": "16,32", "batch": "1", "n_items": "20", "causal": "yes", "repeats": "3",
                      "min_time": "0", "process_repeats": "2", "plot": "false", "out": str(tmp_path / "r.csv")})
    run_sweep(spec, progress=False)
    df = load_results(spec.out).set_index("seq_len")
    assert df.loc[32, "status"] == "ok" and df.loc[32, "n_repeats"] == 2 and df.loc[32, "n_samples"] == 6
    assert df.loc[16, "n_repeats"] == 1 and "|" not in df.loc[16, "latency_samples_ms"]
    assert "|" in df.loc[32, "latency_samples_ms"]
    assert RepeatLog(spec.out).load() == {}  # the pooled row is in the CSV: its repeats left the log


def test_a_script_without_a_main_guard_is_not_rerun_by_the_workers(tmp_path):
    """multiprocessing's spawn re-imports ``__main__``; the repeat workers must not."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    out = tmp_path / "r.csv"
    script.write_text(
        "from elastic_bench.runs.spec import load_spec\n"
        "from elastic_bench.runs.sweep import run_sweep\n"
        f"print('SCRIPT-RUN', flush=True)\n"
        f"run_sweep(load_spec({{'models': 'linear', 'seq_len': '16', 'batch': '1', 'n_items': '20', 'causal': 'yes', 'repeats': '3', "
        f"'min_time': '0', 'process_repeats': '2', 'plot': 'false', 'out': {str(out)!r}}}), progress=False)\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (res.stdout + res.stderr).count("SCRIPT-RUN") == 1
    assert load_results(out)["n_repeats"].tolist() == [2]


def test_no_resume_and_retry_errors_rerun_logged_repeats(tmp_path):
    _, cells = _cells(tmp_path)
    heads = headline(cells)
    log = RepeatLog(tmp_path / "r.csv")
    calls = []

    def measure(cell, rnd):
        calls.append(cell.model)
        return _ok(1.0)

    list(interleaved(heads, 2, measure, log))
    assert len(calls) == 4 and log.load() == {}  # pooled rows taken: their lines leave the log
    # an interrupted run leaves lines behind; --no-resume must not reuse them
    log.append(heads[0].config_hash(), _ok(50.0))
    calls.clear()
    rows = dict((c.config_hash(), r) for c, r in interleaved(heads, 2, measure, log, resume=False))
    assert len(calls) == 4 and "50" not in rows[heads[0].config_hash()]["latency_samples_ms"]
    # --retry-errors reruns a logged failure, keeps a logged success
    log.append(heads[0].config_hash(), {"status": "oom", "reason": "x"})
    log.append(heads[1].config_hash(), _ok(7.0))
    calls.clear()
    rows = dict((c.config_hash(), r) for c, r in interleaved(heads, 2, measure, log, retry_errors=True))
    assert rows[heads[0].config_hash()]["status"] == "ok" and len(calls) == 3
    assert "7" in rows[heads[1].config_hash()]["latency_samples_ms"]


def test_every_row_of_a_run_has_the_sweeps_provenance(tmp_path, monkeypatch):
    """The repeat workers take the sweep's environment; they do not compute their own."""
    from elastic_bench.runs import sweep as sweep_mod

    env = {**sweep_mod.environment("cpu"), "git_sha": "feedfacecafe"}
    monkeypatch.setattr(sweep_mod, "environment", lambda device_type="cpu": env)
    spec = load_spec({"models": "linear", "seq_len": "16,32", "batch": "1", "n_items": "20", "causal": "yes", "repeats": "3",
                      "min_time": "0", "process_repeats": "2", "plot": "false", "out": str(tmp_path / "r.csv")})
    sweep_mod.run_sweep(spec, progress=False)
    df = load_results(spec.out)
    assert df["git_sha"].tolist() == ["feedfacecafe", "feedfacecafe"] and df["n_repeats"].tolist() == [1, 2]


def test_a_cell_pooled_across_timer_modes_says_so():
    from elastic_bench.measure.samples import pool_rows

    same = pool_rows([{**_ok(1.0), "timer_mode": "perf-counter+steady-heap"}] * 2)
    assert same["timer_mode"] == "perf-counter+steady-heap"
    mixed = pool_rows([{**_ok(1.0), "timer_mode": "perf-counter"}, {**_ok(2.0), "timer_mode": "perf-counter+steady-heap"}])
    assert mixed["timer_mode"] == "mixed:perf-counter,perf-counter+steady-heap"
