"""The verdict's convergence table: which runs were still learning when the epoch budget ended."""

from __future__ import annotations

import pandas as pd

from elastic_bench.report.convergence import convergence_note, convergence_table


def curve(run: str, values: list[float], stopped: str = "epochs") -> list[dict]:
    return [{"run": run, "label": run.split("-")[0], "objective": "all", "max_len": 200, "seed": 0, "epoch": i + 1, "valid_ndcg@10": v,
             "stopped": stopped} for i, v in enumerate(values)]  # fmt: skip


def test_rising_flat_early_stopped_and_short_runs():
    rising = [0.10 + 0.001 * i for i in range(30)]  # +0.010 over the last 10 of 30 epochs: +8.4 %
    flat = [0.10 + 0.001 * min(i, 15) for i in range(30)]  # best at epoch 16, nothing gained after
    stopped = "early-stop (no better validation NDCG@10 in 10 evaluations)"
    df = pd.DataFrame(curve("softmax-a", rising) + curve("elastic-b", flat) + curve("linear-c", [0.1, 0.2, 0.3]) + curve("lin-d", flat[:27], stopped))
    t = convergence_table(df).set_index("run")
    assert t.loc["softmax-a", "state"] == "still rising" and t.loc["softmax-a", "rise over last 10 epochs"] == "+8.4%"
    assert t.loc["softmax-a", "best epoch"] == 30 and t.loc["softmax-a", "epochs"] == 30
    assert t.loc["elastic-b", "state"] == "flat" and t.loc["elastic-b", "best epoch"] == 16 and t.loc["elastic-b", "best valid NDCG@10"] == 0.115
    assert t.loc["linear-c", "state"] == "too short to tell"
    assert t.loc["lin-d", "state"] == "early-stopped" and t.loc["lin-d", "stopped"] == "early-stop"
    note = convergence_note(t.reset_index())
    assert "Of 4 finished run(s): " in note and "still rising: 1" in note and "not at convergence" in note


def test_a_small_late_rise_is_flat_and_a_rise_from_zero_is_rising():
    values = [0.1] * 20 + [0.1005]  # +0.5 % in the last epoch
    df = pd.DataFrame(curve("softmax-a", values))
    assert convergence_table(df)["state"].tolist() == ["flat"]
    assert convergence_table(df, rising=0.004)["state"].tolist() == ["still rising"]
    zero = pd.DataFrame(curve("softmax-z", [0.0] * 15 + [0.01] * 5))  # nothing learnt before the window, then something
    assert convergence_table(zero)["state"].tolist() == ["still rising"]


def test_empty_and_all_flat_notes_do_not_claim_non_convergence():
    assert convergence_table(pd.DataFrame()).empty
    assert "No run has finished yet" in convergence_note(convergence_table(pd.DataFrame()))
    flat = convergence_table(pd.DataFrame(curve("softmax-a", [0.1] * 20)))
    assert "not at convergence" not in convergence_note(flat) and "flat: 1" in convergence_note(flat)


def test_rows_sit_family_by_family_with_bank_sizes_in_size_order():
    def run(label: str, objective: str, seed: int) -> list[dict]:
        return [{**r, "label": label, "objective": objective, "seed": seed} for r in curve(f"{label}-{objective}-{seed}", [0.1, 0.2])]

    order = [("elastic M=64k", "last", 0), ("softmax", "all", 1), ("elastic M=1m", "last", 0), ("elastic M=0", "last", 1),
             ("elastic M=4k", "last", 0), ("softmax", "all", 0), ("elastic M=0", "last", 0)]  # fmt: skip
    t = convergence_table(pd.DataFrame([r for o in order for r in run(*o)]))
    assert list(zip(t["label"], t["objective"], t["seed"])) == [
        ("softmax", "all", 0), ("softmax", "all", 1),
        ("elastic M=0", "last", 0), ("elastic M=0", "last", 1), ("elastic M=4k", "last", 0), ("elastic M=64k", "last", 0), ("elastic M=1m", "last", 0),
    ]  # fmt: skip


def test_each_run_shows_its_train_loss_at_the_best_epoch_and_datasets_sit_apart():
    def run(name: str, values: list[float], losses: list[float], dataset: str | None) -> list[dict]:
        return [{**r, "loss": loss, "dataset": dataset} for r, loss in zip(curve(name, values), losses)]

    bank = run("elastic-bank", [0.04, 0.044, 0.043], [3.0, 2.1, 2.0], "beauty")  # fits better, scores worse
    none = run("elastic-none", [0.04, 0.045, 0.048], [3.1, 2.3, 2.2], "beauty")
    ml = run("softmax-ml", [0.1, 0.2], [5.0, 4.0], None)  # an older history without its dataset: ML-1M
    t = convergence_table(pd.DataFrame(bank + none + ml))
    assert t["run"].tolist() == ["softmax-ml", "elastic-bank", "elastic-none"]  # ML-1M first, then Beauty
    assert t["dataset"].tolist() == ["ml-1m", "beauty", "beauty"]
    assert t["train loss at best epoch"].tolist() == ["4.000", "2.100", "2.200"]  # at epoch 2, 2 and 3
    no_loss = convergence_table(pd.DataFrame(curve("softmax-a", [0.1, 0.2])))
    assert no_loss["train loss at best epoch"].tolist() == ["–"]


def test_each_run_names_the_optimiser_its_epochs_stepped_with():
    resumed = curve("softmax-a", [0.1, 0.11, 0.12])
    for h, name in zip(resumed, ["", "", "AdamW fused"]):  # two epochs from before the trainer recorded it
        h["optimizer"] = name
    df = pd.DataFrame(resumed + curve("linear-b", [0.1, 0.2]))
    t = convergence_table(df).set_index("run")
    assert t.loc["softmax-a", "optimizer"] == "not recorded (epochs 1-2); AdamW fused (epoch 3)"
    assert t.loc["linear-b", "optimizer"] == "not recorded"
