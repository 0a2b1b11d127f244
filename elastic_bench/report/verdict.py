"""The verdict on ELASTIC's four claims, from a verdict preset's CSVs alone (README "Verdict so
far"; ``elastic-bench figures --preset verdict-cpu``).

The claims (ELASTIC_SPEC.md, the abstract of arXiv 2408.09380) and the rule that decides each
row of the claims table:

- **memory**, "up to 90 % less GPU memory": ELASTIC's peak memory against a comparator's,
  measured alike (same device, dtype, pass, causality, batch, N, shape), at every N of the
  sweep; *holds* when the largest reduction over N ("up to") is at least 90 %.  The serving
  regime compares the state a server keeps per user (``state_bytes_per_user``).
- **speed**, "×2.7 inference speed-up": the ratio of median latencies, comparator / ELASTIC,
  with its 95 % bootstrap CI; *holds* when the largest speed-up over N is at least 2.7 and
  its CI lies above 1.
- **accuracy**, "consistently outperforms baselines by a significant margin": test NDCG@10
  under equal budgets, family by family; *holds* when ELASTIC is better than the baseline by
  :data:`~.significance.RULE` (Welch's t, α = 0.05, ≥ 2 seeds each side); *does not hold*
  when the baseline is better or the two are not separable.
- **capacity**, "decouples model capacity from computational cost": the memory bank must
  buy accuracy (64k slots better than none, by the same rule) while inference latency at every
  bank size stays within 10 % of M = 0 at every N measured (training: with sparse gradients).

Every ratio row is taken twice: against ``softmax`` (the paper's "standard attention") and
against the best exact backend measured alike (lowest latency for speed, lowest memory for
memory).  Where a rule lacks its rows (a pending cell, one seed, no GPU) the verdict is
*not measurable here* and says what would decide it.  CPU rows say what holds on that CPU;
the claims are about a GPU, whose rows come from ``results/gpu/`` when they exist.

This module decides the claims; ``verdict_figures.py`` draws the figures and
``verdict_report.py`` writes ``reports/<preset>/`` from both.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from ..measure.bootstrap import rows_ratio_ci
from .compare import MATCH_KEYS, causal_value, is_exact, match_key
from .latex import escape
from .markdown import md_table
from .significance import RULE, Stat, better, welch_t

CLAIM_MEMORY = 0.90
CLAIM_SPEEDUP = 2.7
FLAT = 1.10  # "without increasing computational cost": within 10 % of the bank-less model
VERDICTS = ("holds", "does not hold", "not measurable here")
PAPER = {
    "memory": '"up to 90% GPU memory" reduction (abstract)',
    "speed": '"2.7x inference speed-up" (abstract)',
    "accuracy": '"consistently outperforms baselines by a significant margin" (abstract)',
    "capacity": '"decouples model capacity from computational cost" (abstract)',
}
RULES = {
    "memory": f"holds when the largest peak-memory reduction over the measured N is >= {CLAIM_MEMORY:.0%} (serving: state bytes per user)",
    "speed": f"holds when the largest speed-up (comparator / ELASTIC median latency) over the measured N is >= {CLAIM_SPEEDUP} with its 95 % CI above 1",
    "accuracy": f"holds when ELASTIC's test NDCG@10 is better under the significance rule ({RULE}); does not hold when it is worse or not separable",
    "capacity": f"holds when elastic with a 64k bank is better than without one (same rule) and inference latency at every bank size is within {FLAT:.2f}x of no bank at every N",
}
COLUMNS = ("claim", "paper", "regime", "comparison", "measurement", "setting", "verdict", "why", "rows")
ELASTIC_OF = {True: "elastic-causal", False: "elastic"}
REGIMES = (("infer", "throughput"), ("train_step", "throughput"), ("serve", "serving"), ("serve_step", "serving"))


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _row(claim: str, regime: str, comparison: str, measurement: str, setting: str, verdict: str, why: str, rows: Iterable[str] = ()) -> dict[str, str]:
    assert verdict in VERDICTS, verdict
    return dict(claim=claim, paper=PAPER[claim], regime=regime, comparison=comparison, measurement=measurement, setting=setting,
                verdict=verdict, why=why, rows=" ".join(str(r) for r in rows if r))  # fmt: skip


# ----------------------------------------------------------------------------- efficiency


def _device(r: pd.Series) -> str:
    return str(r.get("device_name") or r.get("device") or "")


def _pairs(ok: pd.DataFrame, elastic: str, comparator: str) -> list[tuple[pd.Series, pd.Series]]:
    """(ELASTIC row, comparator row) at every N where both ran alike; comparator ``softmax`` or
    ``best-exact-speed`` / ``best-exact-memory`` (the fastest / smallest exact row alike; a tie in
    memory goes to the faster)."""
    keys = [k for k in MATCH_KEYS if k in ok]
    key = match_key(ok, keys)
    out = []
    for idx, e in ok[(ok["model"] == elastic) & ok["options"].astype(str).map(lambda o: "memory_size=65536" in o or "memory_size" not in o)].iterrows():
        same = ok[(key == key[idx]) & ok["model"].map(is_exact)]
        if comparator == "softmax":
            same = same[same["model"] == "softmax"]
        elif comparator == "best-exact-speed":
            same = same.sort_values("latency_ms_p50")
        else:
            recompute = "backend_detail" in same and bool(same["backend_detail"].fillna("").astype(str).str.startswith("recompute").any())
            col = "state_bytes_per_user" if e["pass"] == "serve_step" and _num(e.get("state_bytes_per_user")) > 0 and not recompute else "peak_mem_mb"
            # a tie (softmax and SDPA keep the same KV cache) goes to the faster one, the backend
            # a server would pick
            same = same.sort_values([col, "latency_ms_p50"], kind="stable")
        if not same.empty:
            out.append((e, same.iloc[0]))
    return out


def _speedup(e: pd.Series, c: pd.Series) -> tuple[float, float, float]:
    """``c``'s latency over ``e``'s with its CI (paired when the rows were timed together)."""
    return rows_ratio_ci(c, e)[:3]


def _memory_ratio(e: pd.Series, c: pd.Series) -> tuple[float, str]:
    """(reduction, what was compared): serving state bytes where both have them, else peak memory."""
    se, sc = _num(e.get("state_bytes_per_user")), _num(c.get("state_bytes_per_user"))
    # a state beyond the history itself (a KV cache, a running state): non-causal serving recomputes
    # from the history, whose bytes every model keeps alike, so peak memory compares those rows
    kept = not str(c.get("backend_detail") or "").startswith("recompute")
    if e["pass"] == "serve_step" and se == se and sc == sc and sc > 0 and kept:
        return 1 - se / sc, "state bytes per user"
    return 1 - _num(e["peak_mem_mb"]) / _num(c["peak_mem_mb"]), "peak memory"


def _less_or_more(reduction: float) -> str:
    """A reduction in words: 0.948 -> "94.8% less", -0.192 -> "19.2% more" (a signed "+94.8%" reads as more)."""
    if reduction != reduction:
        return "n/a"
    return f"{abs(reduction):.1%} {'less' if reduction >= 0 else 'more'}"


def _setting(e: pd.Series, extra: str = "") -> str:
    causal = "causal" if causal_value(e.get("causal")) else "non-causal"
    threads = f", {int(_num(e['cpu_threads']))} thread(s)" if _num(e.get("cpu_threads")) == _num(e.get("cpu_threads")) and str(e.get("device")) == "cpu" else ""
    return (f"{_device(e)}{threads}, {e['dtype']}, {e['pass']}, {causal}, B={int(_num(e['batch']))}, N={int(_num(e['seq_len']))}, "
            f"d={int(_num(e['d_model']))} h={int(_num(e['heads']))} L={int(_num(e['layers']))}{extra}")  # fmt: skip


def efficiency_claims(eff: pd.DataFrame) -> list[dict[str, str]]:
    """Memory and speed rows for every device, regime, pass and causality in ``eff``."""
    rows: list[dict[str, str]] = []
    if eff.empty:
        return rows
    ok = eff[eff["status"] == "ok"].copy()
    for device, dev_rows in ok.groupby(ok.apply(_device, axis=1)):
        cpu = str(dev_rows["device"].iloc[0]) == "cpu"
        note = "; CPU: says what holds on this CPU, not evidence for the GPU claim" if cpu else ""
        for pass_, regime in REGIMES:
            sub = dev_rows[dev_rows["pass"] == pass_]
            objectives = sub["objective"].fillna("").astype(str) if "objective" in sub else pd.Series("", index=sub.index)
            for causal in (True, False):
                for objective in sorted(set(objectives)):
                    part = sub[(sub["causal"].map(causal_value) == causal) & (objectives == objective)]
                    elastic = ELASTIC_OF[causal]
                    if part.empty or not (part["model"] == elastic).any():
                        continue
                    label = f"{regime} ({pass_}{', objective ' + objective if objective else ''})"
                    for comparator in ("softmax", "best-exact"):
                        pairs = _pairs(part, elastic, "softmax" if comparator == "softmax" else "best-exact-memory")
                        rows.append(_memory_row(pairs, label, elastic, comparator, note))
                        pairs = _pairs(part, elastic, "softmax" if comparator == "softmax" else "best-exact-speed")
                        rows.append(_speed_row(pairs, label, elastic, comparator, note))
    return rows


def _memory_row(pairs: list[tuple[pd.Series, pd.Series]], regime: str, elastic: str, comparator: str, note: str) -> dict[str, str]:
    label = f"{elastic} vs {comparator}"
    if not pairs:
        return _row("memory", regime, label, "–", "–", "not measurable here", f"no {comparator} row measured alike")
    scored = [(_memory_ratio(e, c), e, c) for e, c in pairs]
    (red, what), e, c = max(scored, key=lambda t: (t[0][0] if t[0][0] == t[0][0] else -math.inf))
    lo_n = min(int(_num(p[0]["seq_len"])) for p in pairs)
    first = _memory_ratio(*min(pairs, key=lambda p: _num(p[0]["seq_len"])))[0]
    verdict = "holds" if red >= CLAIM_MEMORY else "does not hold"
    meas = f"{_less_or_more(red)} {what} than {c['model']} at N={int(_num(e['seq_len']))} (at N={lo_n}: {_less_or_more(first)})"
    return _row("memory", regime, label, meas, _setting(e), verdict, RULES["memory"] + note, [e["config_hash"], c["config_hash"]])


def _speed_row(pairs: list[tuple[pd.Series, pd.Series]], regime: str, elastic: str, comparator: str, note: str) -> dict[str, str]:
    label = f"{elastic} vs {comparator}"
    if not pairs:
        return _row("speed", regime, label, "–", "–", "not measurable here", f"no {comparator} row measured alike")
    scored = [(_speedup(e, c), e, c) for e, c in pairs]
    (s, lo, hi), e, c = max(scored, key=lambda t: t[0][0] if t[0][0] == t[0][0] else -math.inf)
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo == lo else " (no CI: no raw samples)"
    verdict = "holds" if s >= CLAIM_SPEEDUP and (lo != lo or lo > 1) else "does not hold"
    e0, c0 = min(pairs, key=lambda p: _num(p[0]["seq_len"]))
    s0 = _speedup(e0, c0)[0]
    meas = f"x{s:.2f}{ci} vs {c['model']} at N={int(_num(e['seq_len']))} (at N={int(_num(e0['seq_len']))}: x{s0:.2f})"
    return _row("speed", regime, label, meas, _setting(e), verdict, RULES["speed"] + note, [e["config_hash"], c["config_hash"]])


# ----------------------------------------------------------------------------- accuracy


#: how a dataset is named in the report (the rows hold the name the run was given)
DATASET_TITLES = {"ml-1m": "ML-1M", "beauty": "Amazon Beauty", "sports": "Amazon Sports"}


def family_of(r: pd.Series) -> str:
    """``objective, N=max_len`` on ML-1M (the verdict's main dataset), ``objective, N=max_len, dataset``
    on any other."""
    base = f"{r['objective']}, N={int(_num(r['seq_len']))}"
    data = str(r.get("dataset") or "ml-1m")
    return base if data in ("ml-1m", "nan") else f"{base}, {data}"


def family_order(family: str) -> tuple[bool, str, str, int]:
    """A sort key for families: ML-1M's first (the main dataset), then by dataset, objective and N."""
    parts = family.split(", ")
    return len(parts) > 2, parts[2] if len(parts) > 2 else "", parts[0], int(parts[1].removeprefix("N="))


def family_setting(family: str) -> str:
    """``ML-1M, objective all, N=200`` for the family ``all, N=200``; ``Amazon Beauty, objective last,
    N=50`` for ``last, N=50, beauty``."""
    parts = family.split(", ")
    data = parts[2] if len(parts) > 2 else "ml-1m"
    return f"{DATASET_TITLES.get(data, data)}, objective {', '.join(parts[:2])}"


def model_label(r: pd.Series) -> str:
    m = str(r["model"])
    if m == "elastic":
        size = _num(r.get("memory_size"))
        return f"elastic M={_human(size)}" if size == size else "elastic"
    if "causal=False" in str(r.get("options", "")).split(";"):
        return f"{m} (non-causal)"  # trained without the causal mask it has by default (train --non-causal)
    return m


def _human(v: float) -> str:
    v = int(v)
    return "0" if v == 0 else f"{v >> 20}m" if v % (1 << 20) == 0 else f"{v >> 10}k" if v % 1024 == 0 else str(v)


def seed_stats(acc: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """Mean, std and n over seeds of ``metric`` per (family, model label)."""
    ok = acc[acc["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=["family", "label", "mean", "std", "n", "seeds", "rows"])
    ok["family"] = ok.apply(family_of, axis=1)
    ok["label"] = ok.apply(model_label, axis=1)
    g = ok.groupby(["family", "label"])
    out = g[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    out["seeds"] = g["seed"].agg(lambda s: ",".join(str(int(x)) for x in sorted(s))).values
    out["rows"] = g["config_hash"].agg(" ".join).values
    return out


def _stat(stats: pd.DataFrame, family: str, label: str) -> tuple[Stat, str, str] | None:
    hit = stats[(stats["family"] == family) & (stats["label"] == label)]
    if hit.empty:
        return None
    r = hit.iloc[0]
    std = float(r["std"]) if r["std"] == r["std"] else 0.0
    return Stat(float(r["mean"]), std, int(r["n"])), str(r["seeds"]), str(r["rows"])


def compare_accuracy(stats: pd.DataFrame, claim: str, family: str, a: str, b: str, regime: str) -> dict[str, str]:
    """One accuracy row: ``a`` (an ELASTIC variant) against ``b`` under the significance rule."""
    sa, sb = _stat(stats, family, a), _stat(stats, family, b)
    comparison = f"{a} vs {b}"
    if sa is None or sb is None:
        missing = " and ".join(x for x, s in ((a, sa), (b, sb)) if s is None)
        return _row(claim, regime, comparison, "–", family_setting(family), "not measurable here", f"pending: no finished run of {missing}")
    (ta, seeds_a, rows_a), (tb, seeds_b, rows_b) = sa, sb
    meas = f"test NDCG@10 {ta.mean:.4f} (seeds {seeds_a}) vs {tb.mean:.4f} (seeds {seeds_b}), {ta.mean / tb.mean - 1:+.1%}"
    setting = f"{family_setting(family)}, sasrec-ml1m shape, equal epoch budget"
    if ta.n < 2 or tb.n < 2:
        return _row(claim, regime, comparison, meas, setting, "not measurable here", f"Welch's t needs >= 2 seeds on each side (have {ta.n} and {tb.n})", [rows_a, rows_b])
    p = welch_t(ta, tb)[2]
    meas += f", Welch p = {p:.3g}"
    if better(ta, tb):
        verdict, why = "holds", f"{a} better by the rule"
    elif better(tb, ta):
        verdict, why = "does not hold", f"{b} better by the rule"
    else:
        verdict, why = "does not hold", "not separable by the rule"
    return _row(claim, regime, comparison, meas, setting, verdict, f"{why}; {RULES[claim] if claim == 'accuracy' else RULE}", [rows_a, rows_b])


def accuracy_claims(acc: pd.DataFrame) -> list[dict[str, str]]:
    stats = seed_stats(acc)
    rows = [
        compare_accuracy(stats, "accuracy", "all, N=200", "elastic-causal", "softmax", "causal family (objective all)"),
        compare_accuracy(stats, "accuracy", "all, N=200", "elastic-causal", "linear", "causal family (objective all)"),
        compare_accuracy(stats, "accuracy", "last, N=200", "elastic M=64k", "softmax", "last-position family (objective last)"),
        compare_accuracy(stats, "accuracy", "last, N=200", "elastic M=0", "softmax", "last-position family (objective last): the mechanism without its bank"),
        compare_accuracy(stats, "accuracy", "last, N=200", "elastic M=64k", "softmax (non-causal)",
                         "last-position family (objective last), like for like in causality: softmax without its causal mask"),
    ]
    return rows


# ----------------------------------------------------------------------------- capacity


def bank_latency(bank: pd.DataFrame) -> pd.DataFrame:
    """Per (pass, N, sparse_grad): latency at every memory size and its ratio to M = 0, with CI
    (``paired``: from samples timed call by call together, :func:`~elastic_bench.measure.bootstrap.rows_ratio_ci`)."""
    ok = bank[(bank["status"] == "ok") & (bank["model"] == "elastic")].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["memory_size"] = ok["memory_size"].map(_num)
    ok["sparse_grad"] = ok["options"].astype(str).str.contains("sparse_grad=True")
    out = []
    for (pass_, n, sparse), g in ok.groupby(["pass", "seq_len", "sparse_grad"]):
        base = g[g["memory_size"] == 0]
        for _, r in g.sort_values("memory_size").iterrows():
            ratio, lo, hi, paired = rows_ratio_ci(r, base.iloc[0]) if not base.empty else (math.nan, math.nan, math.nan, False)  # this row / no bank
            out.append({"pass": pass_, "seq_len": int(n), "sparse_grad": bool(sparse), "memory_size": int(r["memory_size"]),
                        "params": r.get("params"), "latency_ms": _num(r["latency_ms_p50"]), "vs_no_bank": ratio, "vs_no_bank_ci_lo": lo, "vs_no_bank_ci_hi": hi,
                        "paired": paired,
                        "config_hash": r["config_hash"], "optimizer": _optimizer(r.get("backend_detail")),
                        "optimizer_no_bank": _optimizer(base.iloc[0].get("backend_detail")) if not base.empty else ""})  # fmt: skip
    return pd.DataFrame(out)


def _step_optimizers(r: Any) -> str:
    """The optimiser of a bank's ``train_step`` row, or both it and the no-bank row's when they differ."""
    mine, base = r["optimizer"], r["optimizer_no_bank"]
    if not mine and not base:  # rows from before train_step named its optimiser
        return "AdamW, implementation not recorded; SparseAdam for a sparse bank"
    if mine == base or (base and mine.startswith(base + " + ")):  # a sparse bank adds its SparseAdam
        return mine
    return f"{mine or 'not recorded'}, vs M=0 with {base or 'not recorded'}: the implementations differ"


def _optimizer(detail: Any) -> str:
    """The optimiser a ``train_step`` row names after its path (``...; optimizer AdamW fused``), else ``""``."""
    text = str(detail) if isinstance(detail, str) else ""
    return text.split("; optimizer ", 1)[1] if "; optimizer " in text else ""


def capacity_claims(acc: pd.DataFrame, bank: pd.DataFrame) -> list[dict[str, str]]:
    stats = seed_stats(acc)
    rows = [compare_accuracy(stats, "capacity", "last, N=200", "elastic M=64k", "elastic M=0", "accuracy bought by the bank")]
    # a second dataset (item 3: when ML-1M cannot separate the sizes), once it has rows
    for fam in sorted(f for f in stats["family"].unique() if f.startswith("last, ") and f.count(", ") == 2):
        if stats[(stats["family"] == fam) & stats["label"].str.startswith("elastic M=")].empty:
            continue
        title = family_setting(fam).split(",")[0]
        rows.append(compare_accuracy(stats, "capacity", fam, "elastic M=64k", "elastic M=0", f"accuracy bought by the bank ({title})"))
    lat = bank_latency(bank) if not bank.empty else pd.DataFrame()
    infer = lat[(lat["pass"] == "infer")] if not lat.empty else lat
    if infer.empty:
        rows.append(_row("capacity", "inference cost vs bank size", "elastic M=max vs M=0", "–", "–", "not measurable here", "pending: no memory-bank sweep rows"))
    else:
        banks = infer[infer["memory_size"] > 0]
        worst = banks.loc[banks.groupby("seq_len")["vs_no_bank"].idxmax()]  # the most expensive bank size at each N
        parts = [f"N={int(r.seq_len)}: x{r.vs_no_bank:.2f} [{r.vs_no_bank_ci_lo:.2f}, {r.vs_no_bank_ci_hi:.2f}] at M={_human(r.memory_size)}" for r in worst.itertuples()]
        top = banks[banks["memory_size"] == banks["memory_size"].max()]
        parts += [f"at M={_human(top['memory_size'].iloc[0])}: " + ", ".join(f"N={int(r.seq_len)} x{r.vs_no_bank:.2f}" for r in top.itertuples())]
        flat = bool((banks["vs_no_bank"] <= FLAT).all())
        rows.append(_row("capacity", "inference cost vs bank size", f"elastic M={', '.join(_human(m) for m in sorted(banks['memory_size'].unique()))} vs M=0",
                         "worst latency ratio " + "; ".join(parts), f"{'; '.join(sorted(set(_device_names(bank))))}, infer{_pairing(banks)}",
                         "holds" if flat else "does not hold", f"flat means within {FLAT:.2f}x of no bank at every bank size and N (point estimates)",
                         list(worst["config_hash"])))  # fmt: skip
    train = lat[(lat["pass"] == "train_step")] if not lat.empty else lat
    for sparse in (False, True):
        t = train[train["sparse_grad"] == sparse] if not train.empty else train
        label = "sparse" if sparse else "dense"
        if t.empty:
            rows.append(_row("capacity", f"training step vs bank size ({label} bank gradients)", "elastic M=max vs M=0", "–", "–", "not measurable here", "pending: no train_step rows"))
            continue
        top = t[t["memory_size"] == t["memory_size"].max()].iloc[0]
        flat = top["vs_no_bank"] <= FLAT
        rows.append(_row("capacity", f"training step vs bank size ({label} bank gradients)", f"elastic M={_human(top['memory_size'])} vs M=0",
                         f"x{top['vs_no_bank']:.2f} [{top['vs_no_bank_ci_lo']:.2f}, {top['vs_no_bank_ci_hi']:.2f}] at N={int(top['seq_len'])}",
                         f"train_step ({_step_optimizers(top)}){_pairing(t[t['memory_size'] > 0])}", "holds" if flat else "does not hold",
                         f"flat means within {FLAT:.2f}x of no bank; the accuracy runs use dense bank gradients (the default)", [top["config_hash"]]))  # fmt: skip
    return rows


def _pairing(banks: pd.DataFrame) -> str:
    """How the bank rows' intervals were computed, when some were paired (calls interleaved)."""
    if banks.empty or not banks["paired"].any():
        return ""
    if banks["paired"].all():
        return ", calls of all bank sizes interleaved (paired CIs)"
    return f", calls interleaved for {int(banks['paired'].sum())} of {len(banks)} bank rows (their CIs paired)"


def _device_names(df: pd.DataFrame) -> list[str]:
    return [_device(r) for _, r in df.iterrows()]


# ----------------------------------------------------------------------------- the table


def claims_table(eff: pd.DataFrame, acc: pd.DataFrame, bank: pd.DataFrame, gpu: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (claim, regime, comparison, device) (module docstring)."""
    rows = efficiency_claims(eff)
    if gpu is not None and not gpu.empty:
        rows += efficiency_claims(gpu)
    else:
        for claim in ("memory", "speed"):
            rows.append(_row(claim, "GPU (the claim's own setting)", "elastic vs softmax and best exact", "–", "–", "not measurable here",
                             "no GPU rows in results/gpu/ yet: `bash scripts/gpu_sweep.sh` on a CUDA machine decides it"))  # fmt: skip
    rows += accuracy_claims(acc)
    rows += capacity_claims(acc, bank)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _seed_table(stats: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_stats` for reading: four decimals kept (0.0820, not 0.082), no std for one seed."""
    out = stats.copy()
    for c in ("mean", "std"):
        out[c] = [f"{v:.4f}" if v == v else "–" for v in out[c].astype(float)]
    return out.rename(columns={"std": "std across seeds"})


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim: how many rows hold, do not hold, and cannot be decided here."""
    out = []
    for claim in PAPER:
        sub = table[table["claim"] == claim]
        counts = {v: int((sub["verdict"] == v).sum()) for v in VERDICTS}
        out.append({"claim": claim, "paper": PAPER[claim], **counts})
    return pd.DataFrame(out)


def to_markdown(df: pd.DataFrame) -> str:
    """:func:`.markdown.md_table` with the cells' own ``|`` and newlines escaped."""
    return md_table(df.astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False).str.replace("\n", " ", regex=False)))


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    cols = ["claim", "regime", "comparison", "measurement", "verdict"]
    body = "\n".join(" & ".join(escape(r[c]) for c in cols) + r" \\" for _, r in table.iterrows())
    return (
        "\\begin{table}[t]\n\\centering\n\\small\n"
        f"\\caption{{{escape(caption)}}}\n\\label{{{label}}}\n"
        "\\begin{tabular}{lp{3cm}p{3cm}p{5cm}l}\n\\toprule\n"
        + " & ".join(c.capitalize() for c in cols) + " \\\\\n\\midrule\n" + body + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    )
