"""The Budget section of the verdict: hours used (wall or epoch sum, whichever is larger) and the
estimate of each pending cell from the finished runs most like it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from elastic_bench.report.training_budget import CellKey, budget_text, estimate, own_pace_hours, parse_pending, remaining_fraction, run_hours


def acc_row(model: str, objective: str, n: int, wall_s: float, h: str, options: str = "") -> dict:
    return dict(status="ok", model=model, objective=objective, seq_len=n, wall_s=wall_s, config_hash=h, options=options)


ACC = pd.DataFrame([
    acc_row("softmax", "all", 200, 3600, "s0"),
    acc_row("softmax", "all", 200, 1800, "s1"),
    acc_row("linear", "all", 200, 1000, "l0", "chunk_size=64"),  # resumed before the wall-time fix: epochs say 2000 s
    acc_row("elastic", "last", 200, 900, "e0", "memory_size=0;experts=32"),
])  # fmt: skip
CURVES = pd.DataFrame([{"run": "linear-l0", "epoch_s": 1000.0}, {"run": "linear-l0", "epoch_s": 1000.0}, {"run": "softmax-s0", "epoch_s": 3000.0}])
ALL = (1.0 + 0.5 + 2000 / 3600) / 3  # the mean of the objective-all runs


def test_hours_take_the_epoch_sum_where_the_wall_time_is_shorter():
    runs = run_hours(ACC, CURVES).set_index("model")
    assert runs.loc["linear", "h"] == pytest.approx(2000 / 3600) and runs.loc["linear", "epochs_longer"]
    assert runs.loc["softmax", "h"].tolist() == pytest.approx([1.0, 0.5])  # wall 3600 > epochs 3000: the wall time stands


@pytest.mark.parametrize(
    "key, hours, basis",
    [
        (CellKey("softmax", "", "all", 200), 0.75, "same cell family"),
        (CellKey("elastic", "experts=32;memory_size=0", "last", 200), 0.25, "same cell family"),
        (CellKey("elastic", "experts=32;memory_size=65536", "last", 200), 0.25, "same model"),
        (CellKey("softmax", "", "last", 200), 0.25, "same objective"),
        (CellKey("elastic-causal", "", "all", 200), ALL, "same objective"),
        (CellKey("softmax", "", "all", 800), 4 * 0.75, "N=200 scaled"),  # softmax's own N=200 runs, x4
        (CellKey("elastic", "experts=32;memory_size=0", "last", 400), 2 * 0.25, "N=200 scaled"),
    ],
)
def test_each_pending_cell_is_estimated_from_the_runs_most_like_it(key, hours, basis):
    assert estimate(key, run_hours(ACC, CURVES)) == (pytest.approx(hours), basis)


def test_with_no_run_of_its_objective_a_cell_borrows_the_other_objective():
    runs = run_hours(ACC[ACC["objective"] == "all"], CURVES)
    assert estimate(CellKey("softmax", "", "last", 200), runs) == (pytest.approx(ALL), "same N, other objective")


def test_a_row_without_any_time_is_left_out_of_the_means():
    acc = pd.concat([ACC, pd.DataFrame([acc_row("softmax", "all", 200, float("nan"), "s2")])], ignore_index=True)
    runs = run_hours(acc, CURVES)
    assert runs["h"].isna().sum() == 1 and estimate(CellKey("softmax", "", "all", 200), runs)[0] == pytest.approx(0.75)
    assert "1 without any recorded time (not counted)" in budget_text(acc, CURVES, [])


def test_pending_lines_parse_and_the_text_counts_each_basis():
    pending = [
        "softmax objective all N=200 seed 1 (abc): not started",
        "elastic [chunk_size=32,experts=32,memory_size=65536] objective last N=200 seed 0 (def): 14/56 epochs in its checkpoint (resumes there)",
        "something else entirely",
    ]
    assert parse_pending(pending[1]) == CellKey("elastic", "chunk_size=32;experts=32;memory_size=65536", "last", 200)
    assert parse_pending(pending[2]) is None
    assert [remaining_fraction(p) for p in pending] == [1.0, 0.75, 1.0]
    text = budget_text(ACC, CURVES, pending)
    assert "4 training cell(s) finished: 2.3 CPU hours" in text and "for 1 of them the sum of epoch times" in text
    # 0.75 h + 3/4 of 0.25 h; the line that does not parse is said, not counted as 0 h silently
    assert "3 pending: about 0.9 h more for 2 of them (1 not estimated), less what their checkpoints hold" in text
    assert "(same cell family: 1, same model: 1, unparsed: 1;" in text


def test_a_checkpointed_cell_is_estimated_at_its_own_pace():
    # 14 of 56 epochs at 90 s each (evaluation included): 42 more epochs, 1.05 h, whatever similar runs took
    line = ("softmax objective all N=800 seed 0 on ml-1m (e9): 14/56 epochs in its checkpoint (resumes there), 90.0 s per epoch")
    assert own_pace_hours(line) == pytest.approx(42 * 90 / 3600)
    assert parse_pending(line) == CellKey("softmax", "", "all", 800, "ml-1m")
    text = budget_text(ACC.assign(dataset="ml-1m"), CURVES, [line])
    assert "1 pending: about 1.1 h more" in text and "(its own checkpoint: 1;" in text
    # before any run has finished, the checkpoint alone still gives an estimate
    first = budget_text(ACC.iloc[0:0], pd.DataFrame(), [line, "linear objective all N=200 seed 0 (x): not started"])
    assert first.startswith("No training cell has finished with a recorded time yet;")
    assert "2 pending: about 1.1 h more for 1 of them (1 not estimated)" in first and "its own checkpoint: 1" in first
    # a line without a pace (an older checkpoint) falls back to the similar runs, less its share done
    old = "softmax objective all N=200 seed 1 (a): 14/56 epochs in its checkpoint (resumes there)"
    assert math.isnan(own_pace_hours(old))
    whole, basis = estimate(parse_pending(old), run_hours(ACC, CURVES))
    assert basis == "same cell family" and f"1 pending: about {whole * 0.75:.1f} h more" in budget_text(ACC, CURVES, [old])


def test_nothing_pending_and_no_finished_run():
    assert budget_text(ACC, CURVES, []).endswith("; nothing pending.")
    empty = ACC.iloc[0:0]
    assert "no estimate" in budget_text(empty, pd.DataFrame(), ["softmax objective all N=200 seed 0 (x): not started"])
    assert math.isnan(estimate(CellKey("softmax", "", "all", 800), run_hours(empty, pd.DataFrame()))[0])


def test_only_runs_on_the_same_dataset_count():
    acc = ACC.assign(dataset="ml-1m")
    line = "elastic [memory_size=0] objective last N=50 seed 0 on beauty (h): not started"
    key = parse_pending(line)
    hours, basis = estimate(key, run_hours(acc, CURVES))
    assert key.dataset == "beauty" and math.isnan(hours) and basis == "no finished run on beauty"
    assert "(1 not estimated)" in budget_text(acc, CURVES, [line]) and "no finished run on beauty: 1" in budget_text(acc, CURVES, [line])
    both = pd.concat([acc, pd.DataFrame([{**acc_row("elastic", "last", 50, 2400, "b0", "memory_size=64k"), "dataset": "beauty"}])], ignore_index=True)
    assert estimate(key, run_hours(both, CURVES)) == (pytest.approx(2 / 3), "same model")  # the Beauty run, not ML-1M's elastic


def test_a_bank_size_new_to_a_dataset_is_scaled_by_another_datasets_pace_ratio():
    def row(data: str, size: int, wall: float, h: str) -> dict:
        return {**acc_row("elastic", "last", 50 if data == "beauty" else 200, wall, h, f"experts=32;memory_size={size}"), "dataset": data}

    acc = pd.DataFrame([row("ml-1m", 65536, 1600, "m64"), row("ml-1m", 0, 1500, "m0"), row("beauty", 65536, 2800, "b64"), row("beauty", 0, 1800, "b0")])
    curves = pd.DataFrame([{"run": f"elastic-{h}", "epoch_s": 1.0} for h in ("m64", "m0", "b64", "b0") for _ in range(50)])  # 50 epochs each
    # ML-1M's 1m cell is checkpointed at 128 s per epoch against its 64k runs' 1600 / 50 = 32 s: x4 the Beauty 64k run's 2800 s
    pending = [
        "elastic [experts=32,memory_size=1048576] objective last N=200 seed 0 on ml-1m (a): 6/56 epochs in its checkpoint (resumes there), 128.0 s per epoch",
        "elastic [experts=32,memory_size=1048576] objective last N=50 seed 0 on beauty (b): not started",
        "elastic [experts=32,memory_size=4096] objective last N=50 seed 0 on beauty (c): not started",  # nothing run at 4k anywhere: same model
    ]
    text = budget_text(acc, curves, pending)
    expected = 50 * 128 / 3600 + 4 * 2800 / 3600 + (2800 + 1800) / 2 / 3600
    assert f"3 pending: about {expected:.1f} h more" in text
    assert "bank size scaled: 1" in text and "same model: 1" in text and "its own checkpoint: 1" in text
    runs = run_hours(acc, curves)
    key = parse_pending(pending[1])
    assert estimate(key, runs)[1] == "same model"  # without paces the rule cannot apply
