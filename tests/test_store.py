"""The results CSV schema is stable, and rows are single, complete lines."""

from __future__ import annotations

import pytest

from elastic_bench.grammar import GrammarError
from elastic_bench.store import COLUMNS, ResultsStore, format_row, load_results, read_lines

EXPECTED_COLUMNS = [
    "run_id", "created_at", "git_sha", "host", "device", "device_name", "torch", "cuda", "triton",
    "backend_versions", "task", "level", "model", "backend_detail", "options", "causal", "objective",
    "loss", "pass", "dtype", "precision", "batch", "seq_len", "d_model", "heads", "layers", "n_items", "experts",
    "memory_size", "topk", "padding", "dropout", "params", "flops", "flops_method", "status", "reason",
    "gate_dtype", "gate_max_err", "n_samples", "n_repeats", "timer_mode", "timing_group", "latency_ms_p50", "latency_ms_p20",
    "latency_ms_p80", "latency_ms_p99", "latency_ms_ci_lo", "latency_ms_ci_hi", "latency_samples_ms", "tokens_per_s", "peak_mem_mb", "act_mem_mb",
    "reserved_mem_mb", "mem_method", "state_bytes_per_user", "state_bytes_per_layer", "cpu_threads", "wall_s", "seed", "dataset", "hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50", "hr@200",
    "ndcg@200", "mrr@200", "config_hash",
]  # fmt: skip


def test_schema_is_the_literal_list():
    assert list(COLUMNS) == EXPECTED_COLUMNS


def test_rows_are_one_line_and_unknown_columns_refused():
    line = format_row({"model": "m", "reason": "two\nlines, with, commas", "status": "error:X", "config_hash": "h"})
    assert line.count("\n") == 1 and line.endswith("\n")
    with pytest.raises(KeyError):
        format_row({"not_a_column": 1})


def test_store_appends_and_resumes(tmp_path):
    path = tmp_path / "r.csv"
    with ResultsStore(path) as st:
        st.append({"model": "a", "status": "ok", "config_hash": "h1", "latency_ms_p50": 1.5})
        st.append({"model": "b", "status": "oom", "config_hash": "h2"})
    with ResultsStore(path) as st:
        st.append({"model": "a", "status": "error:RuntimeError", "config_hash": "h1"})
    header, rows, truncated = read_lines(path)
    assert tuple(header) == COLUMNS and len(rows) == 3 and not truncated
    assert ResultsStore(path).completed() == {"h1": "error:RuntimeError", "h2": "oom"}
    df = load_results(path)
    assert len(df) == 2 and df.set_index("config_hash").loc["h1", "status"] == "error:RuntimeError"


def test_a_file_with_another_schema_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("model,status,config_hash,not_ours\nsoftmax,ok,abc,1\n")
    with pytest.raises(GrammarError, match="different column set"):
        ResultsStore(path).check_schema()


def test_an_older_schema_is_upgraded_in_place_on_append(tmp_path):
    """A file written before columns were added keeps its rows (values in the right columns)
    and resumes; the new columns are empty in the old rows."""
    path = tmp_path / "old.csv"
    path.write_text("model,status,latency_ms_p50,config_hash\nsoftmax,ok,2.5,abc\nsdpa,oom,,def\nsdpa,o")  # truncated tail
    ResultsStore(path).check_schema()
    assert ResultsStore(path).completed() == {"abc": "ok", "def": "oom"}
    with ResultsStore(path) as st:
        st.append({"model": "linear", "status": "ok", "config_hash": "ghi", "n_repeats": 3})
    header, rows, truncated = read_lines(path)
    assert tuple(header) == COLUMNS and len(rows) == 3 and not truncated
    df = load_results(path).set_index("config_hash")
    assert df.loc["abc", "latency_ms_p50"] == 2.5 and df.loc["abc", "model"] == "softmax"
    assert df.loc["ghi", "n_repeats"] == 3 and df["n_repeats"].isna().sum() == 2
