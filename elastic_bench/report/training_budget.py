"""The CPU hours a preset's trainings used, and an estimate of what its pending cells need.

Used hours: each finished run's wall time, or the sum of its epoch times where that is larger (a run
resumed before the trainer carried its wall time across checkpoints counted only its last segment).

Estimate of a pending cell: the mean hours of the finished runs most like it, looked up in this order
(the first that has a run wins, and the report counts how many estimates came from each):

1. ``same cell family``: same model, options, objective and max length (another seed);
2. ``same model``: same model, objective and max length (other options, e.g. another bank size);
3. ``same objective``: any model with the same objective and max length;
4. ``same N, objective all``: the runs of the same max length under another objective: an upper bound
   for objective ``last``, whose step scores one position per sequence instead of every one;
5. ``N=200 scaled``: a max length nobody finished yet, at N/200 times the N=200 runs (4x at N=800;
   softmax attention is quadratic in N, ELASTIC linear, and batches pad to their longest sequence, so
   this is a rough guess, labelled so).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

#: ``pending_cells``'s wording: ``model [k=v,...] objective X N=200 seed 0 (hash): progress``
_PENDING = re.compile(r"^(?P<model>\S+)(?: \[(?P<opts>[^\]]*)\])? objective (?P<objective>\w+) N=(?P<n>\d+) seed (?P<seed>\d+)")


@dataclass(frozen=True)
class CellKey:
    model: str
    options: str
    objective: str
    max_len: int


def _options(text: object) -> str:
    if not isinstance(text, str):
        return ""
    return ";".join(sorted(p.strip() for p in re.split(r"[;,]", text) if p.strip()))


def parse_pending(line: str) -> CellKey | None:
    """The cell a ``pending_cells`` line names (``None`` for a line of another shape)."""
    m = _PENDING.match(line)
    if not m:
        return None
    return CellKey(m["model"], _options(m["opts"]), m["objective"], int(m["n"]))


def run_hours(acc: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per finished training run: its key and its hours (wall, or epoch sum where larger)."""
    ok = acc[acc["status"] == "ok"] if not acc.empty else acc
    rows = []
    for _, r in ok.iterrows():
        wall = pd.to_numeric(r.get("wall_s"), errors="coerce")
        epochs = math.nan
        if not curves.empty:
            c = curves[curves["run"] == f"{r['model']}-{r['config_hash']}"]
            epochs = pd.to_numeric(c["epoch_s"], errors="coerce").sum() if not c.empty else math.nan
        secs = max(x for x in (wall, epochs, 0.0) if not pd.isna(x))
        rows.append({"model": r["model"], "options": _options(r.get("options")), "objective": str(r["objective"]),
                     "max_len": int(pd.to_numeric(r["seq_len"])), "h": secs / 3600, "epochs_longer": bool(epochs > wall)})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "options", "objective", "max_len", "h", "epochs_longer"])


def estimate(key: CellKey, runs: pd.DataFrame) -> tuple[float, str]:
    """Hours for a pending ``key`` and which rule of the module docstring gave them."""
    same_n = runs[runs["max_len"] == key.max_len]
    lookups = [
        ("same cell family", same_n[(same_n["model"] == key.model) & (same_n["options"] == key.options) & (same_n["objective"] == key.objective)]),
        ("same model", same_n[(same_n["model"] == key.model) & (same_n["objective"] == key.objective)]),
        ("same objective", same_n[same_n["objective"] == key.objective]),
        ("same N, objective all", same_n[same_n["objective"] == "all"]),
    ]
    for basis, found in lookups:
        if not found.empty:
            return float(found["h"].mean()), basis
    short = runs[runs["max_len"] == 200]
    if not short.empty:
        return float(short["h"].mean()) * 4 * key.max_len / 800, "N=200 scaled"
    return math.nan, "no finished run"


def budget_text(acc: pd.DataFrame, curves: pd.DataFrame, pending: list[str]) -> str:
    """The Budget section of ``verdict.md``: hours used, and the estimate for ``pending`` by basis."""
    runs = run_hours(acc, curves)
    if runs.empty:
        return f"No training cell has finished yet; {len(pending)} pending (no estimate without a finished run)."
    lines = [f"{len(runs)} training cell(s) finished: {runs['h'].sum():.1f} CPU hours (one thread each, one at a time)"]
    longer = int(runs["epochs_longer"].sum())
    if longer:
        lines[0] += f"; for {longer} of them the sum of epoch times, which is larger than the recorded wall time (resumed before the trainer carried it)"
    for (objective, n), g in runs.groupby(["objective", "max_len"]):
        lines.append(f"mean per run, objective {objective} N={n}: {g['h'].mean():.2f} h")
    total, bases = 0.0, {}
    for line in pending:
        key = parse_pending(line)
        hours, basis = estimate(key, runs) if key else (math.nan, "unparsed")
        if not math.isnan(hours):
            total += hours
        bases[basis] = bases.get(basis, 0) + 1
    how = ", ".join(f"{k}: {v}" for k, v in bases.items())
    lines.append(f"{len(pending)} pending: about {total:.1f} h more ({how}; the rules are in `elastic_bench/report/training_budget.py`)")
    return "; ".join(lines) + "."
