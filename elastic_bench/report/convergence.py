"""Was each training run still learning when the epoch budget ended?

The verdict compares models at an equal epoch budget, chosen so that softmax reaches 95 % of its
converged validation NDCG@10. That is a budget, not convergence, and a family trained under another
objective may need more. This table makes it visible: for each finished run (its history in
``results/<preset>/runs/*.json``), how much its best validation NDCG@10 rose over its last ``window``
epochs. A rise of at least ``RISING`` means the run was still learning when it stopped.
"""

from __future__ import annotations

import pandas as pd

WINDOW = 10  # epochs: the early-stopping patience of the verdict preset
RISING = 0.01  # a rise of 1 % of the best validation NDCG@10 over the window: still learning


def _columns(window: int) -> list[str]:
    return ["label", "objective", "max_len", "seed", "epochs", "best epoch", "best valid NDCG@10", f"rise over last {window} epochs", "state", "run"]


def convergence_table(curves: pd.DataFrame, window: int = WINDOW, rising: float = RISING) -> pd.DataFrame:
    """One row per run of ``curves`` (``learning_curves``'s frame): epochs, best epoch, and the rise
    of the best validation NDCG@10 over the last ``window`` epochs, with ``still rising`` or ``flat``."""
    rows = []
    for run, g in curves.groupby("run", sort=True) if not curves.empty else []:
        g = g.sort_values("epoch")
        v = pd.to_numeric(g["valid_ndcg@10"], errors="coerce").to_numpy()
        if len(v) == 0 or pd.isna(v).all():
            continue
        best = float(pd.Series(v).max())
        before = float(pd.Series(v[: len(v) - window]).max()) if len(v) > window else float("nan")
        rise = best / before - 1 if before and before == before else float("nan")
        state = "too short to tell" if rise != rise else ("still rising" if rise >= rising else "flat")
        first = g.iloc[0]
        rows.append({"label": first["label"], "objective": first["objective"], "max_len": first["max_len"], "seed": first["seed"], "epochs": len(v),
                     "best epoch": int(g["epoch"].iloc[int(pd.Series(v).idxmax())]), "best valid NDCG@10": round(best, 4),
                     f"rise over last {window} epochs": "–" if rise != rise else f"{rise:+.1%}", "state": state, "run": run})  # fmt: skip
    return pd.DataFrame(rows, columns=_columns(window))


def convergence_note(table: pd.DataFrame, window: int = WINDOW, rising: float = RISING) -> str:
    """One sentence under the table: the rule, and how many runs were still rising."""
    n = int((table["state"] == "still rising").sum()) if not table.empty else 0
    return (f"A run is *still rising* when its best validation NDCG@10 rose by at least {rising:.0%} over its last {window} epochs. "
            f"{n} of {len(table)} finished run(s) were: the equal budget compares the models at the same cost, not at convergence.")  # fmt: skip
