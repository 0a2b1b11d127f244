"""Timed training passes run as people train: fp32 weights, 16-bit autocast, the presets' dropout;
and the causality axis crosses each backend with the causalities it supports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from elastic_bench.measure.cell import TRAIN_DROPOUT

from elastic_bench.runs.grid import expand
from elastic_bench.grammar import GrammarError
from elastic_bench.measure.passes import build_workload, precision
from elastic_bench.runs.spec import load_spec
from elastic_bench.store import load_results

COMMITTED = Path(__file__).resolve().parent.parent / "results" / "cpu-sweep-2026-11-27.csv"


def _cell(**kw):
    spec = load_spec({"models": "softmax", "seq_len": "32", "batch": "2", "n_items": "50", "causal": "yes", **kw})
    return expand(spec)[0]


def test_train_step_keeps_fp32_weights_and_runs_under_autocast():
    cell = _cell(**{"pass": "train_step", "dtype": "bf16"})
    assert cell.dropout == TRAIN_DROPOUT and precision(cell) == "fp32 weights + bf16 autocast"
    seen = []
    work = build_workload(cell, torch.device("cpu"))
    hook = work.module.register_forward_hook(lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype)))
    work.run()
    hook.remove()
    assert all(p.dtype == torch.float32 for p in work.module.parameters())
    assert seen and all(on for on, _ in seen)
    assert work.optimizer is not None and all(v.dtype == torch.float32 for st in work.optimizer.state.values() for v in st.values() if v.ndim)


def test_infer_casts_weights_and_has_no_dropout():
    cell = _cell(**{"pass": "infer", "dtype": "bf16"})
    assert cell.dropout == 0.0 and precision(cell) == "bf16 weights"
    work = build_workload(cell, torch.device("cpu"))
    assert all(p.dtype == torch.bfloat16 for p in work.module.parameters())


def test_explicit_dropout_applies_to_every_pass():
    cells = expand(load_spec({"models": "softmax", "seq_len": "32", "batch": "2", "pass": "infer,train_step", "dropout": "0.1"}))
    assert {c.dropout for c in cells} == {0.1}
    with pytest.raises(GrammarError, match="--dropout"):
        load_spec({"dropout": "1.5"})


def test_causal_axis_crosses_each_backend_with_what_it_supports():
    def modes(causal):
        spec = load_spec({"models": "softmax,elastic,elastic-causal", "seq_len": "64", "causal": causal})
        return sorted((c.model, c.causal) for c in expand(spec)), spec.notes

    auto, _ = modes("auto")
    assert auto == [("elastic", False), ("elastic-causal", True), ("softmax", False), ("softmax", True)]
    yes, notes = modes("yes")
    assert yes == [("elastic-causal", True), ("softmax", True)] and any("elastic cannot run causal" in n for n in notes)
    no, notes = modes("no")
    assert no == [("elastic", False), ("softmax", False)] and any("elastic-causal cannot run non-causal" in n for n in notes)
    with pytest.raises(GrammarError, match="--causal"):
        load_spec({"causal": "sometimes"})


def test_the_committed_sweep_resumes_under_the_new_defaults():
    """The causality axis and ``--dropout auto`` must not invalidate committed rows: every
    cell of the 2026-11-27 CPU sweep is still in the default grid with the same hash."""
    rows = load_results(COMMITTED)
    device_name = rows["device_name"].iloc[0]
    hashes = {c.config_hash() for c in expand(load_spec({"threads": "1"}), device_name)}
    committed = set(rows["config_hash"])
    assert committed and committed <= hashes
    assert len(hashes) > len(committed)  # the non-causal peers are new cells


def test_a_token_budget_below_the_longest_sequence_is_said():
    notes = load_spec({"seq_len": "256..8192", "tokens_per_batch": "4k"}).notes
    assert any("exceeded at seq-len 8k" in n for n in notes)
    assert not any("exceeded" in n for n in load_spec({"seq_len": "256..4096", "tokens_per_batch": "4k"}).notes)
