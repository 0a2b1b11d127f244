"""Was each training run still learning when its epoch budget ended?

The verdict compares models at an equal epoch budget, chosen so that softmax reaches 95 % of its
converged validation NDCG@10. That is a budget, not convergence, and a family trained under another
objective may need more. This table makes it visible: for each finished run (its history in
``results/<preset>/runs/*.json``), how much its best validation NDCG@10 rose over its last ``window``
epochs, and how it stopped. A run that ran out of epochs with a rise of at least ``RISING`` was still
learning; one that early-stopped had gone ``patience`` evaluations without a better score.
Beside it, the training loss at the best epoch: at equal epochs, of two runs in a family, the one
with the lower training loss and the lower validation score fits its training data better and
generalizes worse (the histories give the loss of every epoch). Last, the optimiser implementation
each run's epochs stepped with (``not recorded`` before the trainer kept it: torch's default).
"""

from __future__ import annotations

import re

import pandas as pd

from ..optimizers import epochs_implementation

WINDOW = 10  # epochs: the verdict preset's early-stopping patience (it evaluates every epoch)
RISING = 0.01  # a rise of 1 % of the best validation NDCG@10 over the window: still learning


def _columns(window: int) -> list[str]:
    return ["label", "dataset", "objective", "max_len", "seed", "epochs", "best epoch", "best valid NDCG@10", "train loss at best epoch",
            f"rise over last {window} epochs", "stopped", "state", "optimizer", "run"]  # fmt: skip


def _state(stopped: str, rise: float, rising: float) -> str:
    if stopped.startswith("early-stop"):
        return "early-stopped"
    if rise != rise:
        return "too short to tell"
    return "still rising" if rise >= rising else "flat"


def convergence_table(curves: pd.DataFrame, window: int = WINDOW, rising: float = RISING) -> pd.DataFrame:
    """One row per run of ``curves`` (``learning_curves``'s frame): epochs, best epoch, the rise of the
    best validation NDCG@10 over the last ``window`` epochs, how it stopped, and its state."""
    rows = []
    for run, g in curves.groupby("run", sort=True) if not curves.empty else []:
        g = g.sort_values("epoch")
        v = pd.to_numeric(g["valid_ndcg@10"], errors="coerce").reset_index(drop=True)
        if v.isna().all():
            continue
        best = float(v.max())
        before = float(v.iloc[: len(v) - window].max()) if len(v) > window else float("nan")
        rise = (best / before - 1 if before > 0 else float("inf")) if before == before else float("nan")
        stopped = str(g["stopped"].iloc[0]) if "stopped" in g and g["stopped"].iloc[0] == g["stopped"].iloc[0] else ""
        first, at_best = g.iloc[0], g.iloc[int(v.idxmax())]
        loss = pd.to_numeric(pd.Series([at_best.get("loss")]), errors="coerce").iloc[0]
        rows.append({"label": first["label"], "dataset": _dataset(first.get("dataset")), "objective": first["objective"], "max_len": first["max_len"],
                     "seed": first["seed"], "epochs": len(v), "best epoch": int(at_best["epoch"]), "best valid NDCG@10": round(best, 4),
                     "train loss at best epoch": "–" if loss != loss else f"{float(loss):.3f}",
                     f"rise over last {window} epochs": "–" if rise != rise else f"{rise:+.1%}",
                     "stopped": stopped.split(" (")[0] or "–", "state": _state(stopped, rise, rising),
                     "optimizer": epochs_implementation(g.to_dict("records")), "run": run})  # fmt: skip
    out = pd.DataFrame(rows, columns=_columns(window))
    # family by family, then model (bank sizes in size order) and seed: the rows a reader compares sit together
    keys = {"label": _label_key, "dataset": lambda d: (d != "ml-1m", d)}  # ML-1M, the main dataset, first
    return out.sort_values(["dataset", "objective", "max_len", "label", "seed"], key=lambda c: c.map(keys[c.name]) if c.name in keys else c,
                           kind="stable", ignore_index=True)  # fmt: skip


def _dataset(value: object) -> str:
    """A run's dataset; histories written before runs carried it are ML-1M's."""
    return value if isinstance(value, str) and value else "ml-1m"


def _label_key(label: object) -> tuple[str, int]:
    """``elastic M=64k`` -> ("elastic M=", 65536): sizes sort by value (0 < 4k < 64k < 1m), not as text."""
    m = re.fullmatch(r"(.*M=)(\d+)([km]?)", str(label))
    if not m:
        return str(label), -1
    return m[1], int(m[2]) << {"": 0, "k": 10, "m": 20}[m[3]]


def convergence_note(table: pd.DataFrame, window: int = WINDOW, rising: float = RISING) -> str:
    """The rule under the table, and how many runs were still rising when their budget ended."""
    rule = (f"A run that used its whole epoch budget is *still rising* when its best validation NDCG@10 rose by at least {rising:.0%} "
            f"over its last {window} epochs, else *flat*; an early-stopped one went its patience without a better score. "
            "The training loss is the epoch's mean sampled-softmax loss at the best epoch (in training mode: dropout on); runs compare by it only within one family and at equal epochs "
            "(their histories in `results/<preset>/runs/*.json` give it for every epoch). The optimizer column names the AdamW "
            "implementation each run's epochs stepped with (`elastic_bench/optimizers.py`); *not recorded* is torch's default, "
            "a for-loop on the CPU, from before the trainer recorded it: the same update to rounding, at another cost per epoch.")  # fmt: skip
    if table.empty:
        return rule + " No run has finished yet."
    counts = table["state"].value_counts()
    n = int(counts.get("still rising", 0))
    told = ", ".join(f"{k}: {v}" for k, v in counts.items())
    tail = " The equal budget compares those models at the same cost, not at convergence." if n else ""
    return f"{rule} Of {len(table)} finished run(s): {told}.{tail}"
