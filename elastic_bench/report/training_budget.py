"""The CPU hours a preset's trainings used, and an estimate of what its pending cells need.

Used hours: each finished run's wall time, or the sum of its epoch times where that is larger (a run
resumed before the trainer carried its wall time across checkpoints counted only its last segment).
A finished row with neither is left out of the means and counted apart.

Estimate of a pending cell that has a checkpoint with its pace (``k/E epochs in its checkpoint ...,
S s per epoch``): ``its own checkpoint``, its remaining ``E - k`` epochs at its own pace so far
(evaluation included; early stopping would make it less).

Any other pending cell: the mean hours of the finished runs on the same dataset most like it (a
dataset with no finished run gets no estimate, said so), looked up in this order; the first that
has a run wins, and the report counts how many estimates came from each:

1. ``same cell family``: same model, options, objective and max length (another seed);
1b. ``bank size scaled``: a bank size not run yet on this dataset, but run (or checkpointed, with its
   pace) on another dataset beside a bank size this dataset has run: this dataset's runs of that
   size, times the other dataset's ratio of seconds per epoch between the two sizes (the nearest
   size, by log M, first). A bank's cost is its dense AdamW update, so it does not scale with the
   mean run of the model (a 1m bank takes 4x a 64k one per epoch on ML-1M);
2. ``same model``: same model, objective and max length (other options, e.g. another bank size);
3. ``same objective``: any model with the same objective and max length;
4. ``same N, other objective``: the runs of the same max length under the other objective, a proxy
   only: objective ``last`` scores one position per sequence but trains about two sequences per
   user and epoch (a random prefix and the whole history), objective ``all`` one;
5. ``N=200 scaled``: a max length nobody finished yet, at N/200 times the most similar N=200 runs
   (rules 1-4 at N=200; 4x at N=800): softmax attention is quadratic in N, ELASTIC linear, and
   batches pad to their longest sequence, so this is a rough guess, labelled so.

A cell estimated so with ``k/E epochs in its checkpoint`` (an older checkpoint, without its pace)
needs only the remaining ``1 - k/E`` of that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import pandas as pd

#: ``pending_cells``'s wording: ``model [k=v,...] objective X N=200 seed 0 on ml-1m (hash): progress``
_PENDING = re.compile(
    r"^(?P<model>\S+)(?: \[(?P<opts>[^\]]*)\])? objective (?P<objective>\w+) N=(?P<n>\d+) seed (?P<seed>\d+)(?: on (?P<data>\S+))?"
)
_DONE = re.compile(r"(?P<done>\d+)/(?P<epochs>\d+) epochs in its checkpoint")
_PACE = re.compile(r"(?P<done>\d+)/(?P<epochs>\d+) epochs in its checkpoint \(resumes there\), (?P<s>\d+(?:\.\d+)?) s per epoch")


@dataclass(frozen=True)
class CellKey:
    model: str
    options: str
    objective: str
    max_len: int
    dataset: str = ""  # "" (a line that does not name it): any dataset's runs count


def _options(text: object) -> str:
    if not isinstance(text, str):
        return ""
    return ";".join(sorted(p.strip() for p in re.split(r"[;,]", text) if p.strip()))


def parse_pending(line: str) -> CellKey | None:
    """The cell a ``pending_cells`` line names (``None`` for a line of another shape)."""
    m = _PENDING.match(line)
    if not m:
        return None
    return CellKey(m["model"], _options(m["opts"]), m["objective"], int(m["n"]), m["data"] or "")


def remaining_fraction(line: str) -> float:
    """The share of a pending cell's epochs still to run (its checkpoint's progress; 1 if none)."""
    m = _DONE.search(line)
    return max(0.0, 1 - int(m["done"]) / int(m["epochs"])) if m and int(m["epochs"]) > 0 else 1.0


def own_pace_hours(line: str) -> float:
    """Hours a checkpointed pending cell still needs at its own pace (NaN when the line gives none)."""
    m = _PACE.search(line)
    if not m:
        return math.nan
    return max(0, int(m["epochs"]) - int(m["done"])) * float(m["s"]) / 3600


def run_hours(acc: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per finished training run: its key and its hours (wall, or epoch sum where larger;
    NaN when it has neither)."""
    ok = acc[acc["status"] == "ok"] if not acc.empty else acc
    rows = []
    for _, r in ok.iterrows():
        wall = pd.to_numeric(r.get("wall_s"), errors="coerce")
        epochs = math.nan
        if not curves.empty:
            c = curves[curves["run"] == f"{r['model']}-{r['config_hash']}"]
            epochs = pd.to_numeric(c["epoch_s"], errors="coerce").sum() if not c.empty else math.nan
        known = [x for x in (wall, epochs) if not pd.isna(x) and x > 0]
        n_epochs = len(c) if not curves.empty and not c.empty else math.nan
        rows.append({"model": r["model"], "options": _options(r.get("options")), "objective": str(r["objective"]),
                     "max_len": int(pd.to_numeric(r["seq_len"])), "dataset": str(r.get("dataset", "")), "h": max(known) / 3600 if known else math.nan,
                     "epochs_longer": bool(epochs > wall), "s_per_epoch": max(known) / n_epochs if known and n_epochs == n_epochs else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "options", "objective", "max_len", "dataset", "h", "epochs_longer", "s_per_epoch"])


def _bank(options: str) -> int | None:
    m = re.search(r"(?:^|;)memory_size=(\d+)", options)
    return int(m[1]) if m else None


def _without_bank(options: str) -> str:
    return ";".join(p for p in options.split(";") if not p.startswith("memory_size="))


def _bank_scaled(key: CellKey, runs: pd.DataFrame, paces: pd.DataFrame) -> float:
    """Rule 1b: hours of ``key``'s dataset's runs of the nearest bank size, scaled by another dataset's
    ratio of seconds per epoch between ``key``'s bank size and that one (NaN when nothing fits)."""
    size = _bank(key.options)
    if size is None or paces.empty:
        return math.nan
    like = lambda df: df[(df["model"] == key.model) & (df["objective"] == key.objective) & (df["options"].map(_without_bank) == _without_bank(key.options))]  # noqa: E731
    here = like(runs[(runs["dataset"] == key.dataset) & (runs["max_len"] == key.max_len)])
    elsewhere = like(paces[paces["dataset"] != key.dataset])
    for other in sorted({_bank(o) for o in here["options"]} - {None}, key=lambda m: abs(math.log2(m + 1) - math.log2(size + 1))):
        for _, g in elsewhere.groupby(["dataset", "max_len"]):
            mine, theirs = g[g["options"].map(_bank) == size]["s"], g[g["options"].map(_bank) == other]["s"]
            if not mine.empty and not theirs.empty:
                return float(here[here["options"].map(_bank) == other]["h"].mean()) * mine.mean() / theirs.mean()
    return math.nan


def _similar(key: CellKey, same_n: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The finished runs of ``same_n`` (one max length) most like ``key``: rules 1-4."""
    lookups = [
        ("same cell family", (same_n["model"] == key.model) & (same_n["options"] == key.options) & (same_n["objective"] == key.objective)),
        ("same model", (same_n["model"] == key.model) & (same_n["objective"] == key.objective)),
        ("same objective", same_n["objective"] == key.objective),
        ("same N, other objective", same_n["objective"] != key.objective),
    ]
    for basis, hit in lookups:
        if hit.any():
            return same_n[hit], basis
    return same_n.iloc[0:0], ""


def estimate(key: CellKey, runs: pd.DataFrame, paces: pd.DataFrame | None = None) -> tuple[float, str]:
    """Hours for a whole run of a pending ``key`` and which rule of the module docstring gave them;
    ``paces`` (dataset, model, options, objective, max_len, s: seconds per epoch) feeds rule 1b."""
    runs = every = runs.dropna(subset=["h"])  # every dataset's runs: rule 1b reads the others' too
    if key.dataset:
        runs = runs[runs["dataset"] == key.dataset]
        if runs.empty:
            return math.nan, f"no finished run on {key.dataset}"
    found, basis = _similar(key, runs[runs["max_len"] == key.max_len])
    if basis != "same cell family" and key.dataset and paces is not None:
        scaled = _bank_scaled(key, every, paces)
        if scaled == scaled:
            return scaled, "bank size scaled"
    if basis:
        return float(found["h"].mean()), basis
    found, basis = _similar(replace(key, max_len=200), runs[runs["max_len"] == 200])
    if basis:
        return float(found["h"].mean()) * key.max_len / 200, "N=200 scaled"
    return math.nan, "no finished run"


def _paces(runs: pd.DataFrame, pending: list[str]) -> pd.DataFrame:
    """Seconds per epoch (evaluation included) of every finished run and every checkpointed pending
    cell that gives its pace: rule 1b's ratios between bank sizes."""
    cols = ["dataset", "model", "options", "objective", "max_len", "s"]
    rows = [r[cols[:-1]].tolist() + [r["s_per_epoch"]] for _, r in runs.dropna(subset=["s_per_epoch"]).iterrows()]
    for line in pending:
        key, m = parse_pending(line), _PACE.search(line)
        if key and m and key.dataset:
            rows.append([key.dataset, key.model, key.options, key.objective, key.max_len, float(m["s"])])
    return pd.DataFrame(rows, columns=cols)


def budget_text(acc: pd.DataFrame, curves: pd.DataFrame, pending: list[str]) -> str:
    """The Budget section of ``verdict.md``: hours used, and the estimate for ``pending`` by basis."""
    runs = run_hours(acc, curves)
    timed = runs.dropna(subset=["h"])
    if timed.empty:
        if not any(not math.isnan(own_pace_hours(p)) for p in pending):
            return f"No training cell has finished with a recorded time yet; {len(pending)} pending (no estimate without one)."
        lines = ["No training cell has finished with a recorded time yet"]
    else:
        lines = [f"{len(runs)} training cell(s) finished: {timed['h'].sum():.1f} CPU hours (one thread each, one at a time)"]
    longer = int(runs["epochs_longer"].sum())
    if longer:
        lines[0] += f"; for {longer} of them the sum of epoch times, which is larger than the recorded wall time (resumed before the trainer carried it)"
    if len(timed) < len(runs):
        lines[0] += f"; {len(runs) - len(timed)} without any recorded time (not counted)"
    for (objective, n), g in timed.groupby(["objective", "max_len"]):
        lines.append(f"mean per run, objective {objective} N={n}: {g['h'].mean():.2f} h")
    if not pending:
        lines.append("nothing pending")
        return "; ".join(lines) + "."
    total, bases, missing = 0.0, {}, 0
    paces = _paces(runs, pending)
    for line in pending:
        own = own_pace_hours(line)
        key = parse_pending(line)
        if not math.isnan(own):
            hours, basis, fraction = own, "its own checkpoint", 1.0  # already the remaining epochs only
        else:
            (hours, basis), fraction = (estimate(key, runs, paces) if key else (math.nan, "unparsed")), remaining_fraction(line)
        if math.isnan(hours):
            missing += 1
        else:
            total += hours * fraction
        bases[basis] = bases.get(basis, 0) + 1
    how = ", ".join(f"{k}: {v}" for k, v in bases.items())
    scope = f"for {len(pending) - missing} of them ({missing} not estimated)" if missing else ""
    lines.append(f"{len(pending)} pending: about {total:.1f} h more{' ' + scope if scope else ''}, less what their checkpoints hold "
                 f"({how}; the rules are in `elastic_bench/report/training_budget.py`)")  # fmt: skip
    return "; ".join(lines) + "."
