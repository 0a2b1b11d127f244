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
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..measure.bootstrap import parse_samples, ratio_ci
from ..store import COLUMNS as COLUMNS_OF_RESULTS
from ..store import load_results
from .compare import MATCH_KEYS, causal_value, is_exact, match_key
from .convergence import convergence_note, convergence_table
from .figure_kit import plt, save_figure
from .latex import escape
from .markdown import md_table
from .significance import RULE, Stat, better, welch_t
from .training_budget import budget_text

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
    a, ga = parse_samples(c.get("latency_samples_ms"))
    b, gb = parse_samples(e.get("latency_samples_ms"))
    if len(a) and len(b):
        return ratio_ci(a, b, ga, gb)
    return _num(c["latency_ms_p50"]) / _num(e["latency_ms_p50"]), math.nan, math.nan


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
    """Per (pass, N, sparse_grad): latency at every memory size and its ratio to M = 0, with CI."""
    ok = bank[(bank["status"] == "ok") & (bank["model"] == "elastic")].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["memory_size"] = ok["memory_size"].map(_num)
    ok["sparse_grad"] = ok["options"].astype(str).str.contains("sparse_grad=True")
    out = []
    for (pass_, n, sparse), g in ok.groupby(["pass", "seq_len", "sparse_grad"]):
        base = g[g["memory_size"] == 0]
        for _, r in g.sort_values("memory_size").iterrows():
            ratio, lo, hi = _speedup(base.iloc[0], r) if not base.empty else (math.nan,) * 3  # this row / no bank
            out.append({"pass": pass_, "seq_len": int(n), "sparse_grad": bool(sparse), "memory_size": int(r["memory_size"]),
                        "params": r.get("params"), "latency_ms": _num(r["latency_ms_p50"]), "vs_no_bank": ratio, "vs_no_bank_ci_lo": lo, "vs_no_bank_ci_hi": hi,
                        "config_hash": r["config_hash"]})  # fmt: skip
    return pd.DataFrame(out)


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
                         "worst latency ratio " + "; ".join(parts), f"{'; '.join(sorted(set(_device_names(bank))))}, infer",
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
                         "train_step (AdamW; SparseAdam for a sparse bank)", "holds" if flat else "does not hold",
                         f"flat means within {FLAT:.2f}x of no bank; the accuracy runs use dense bank gradients (the default)", [top["config_hash"]]))  # fmt: skip
    return rows


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


# ----------------------------------------------------------------------------- figures


def plot_accuracy_families(acc: pd.DataFrame, out_dir: Path) -> list[Path]:
    ok = acc[acc["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["family"] = ok.apply(family_of, axis=1)
    ok["label"] = ok.apply(model_label, axis=1)
    fams = sorted(ok["family"].unique())
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        sub = ok[ok["family"] == fam]
        labels = sorted(sub["label"].unique(), key=lambda s: (s != "softmax", s))
        for i, lab in enumerate(labels):
            v = sub[sub["label"] == lab]["ndcg@10"].astype(float)
            ax.scatter([i] * len(v), v, color="C%d" % i, s=18, zorder=3)
            ax.hlines(v.mean(), i - 0.25, i + 0.25, color="C%d" % i, lw=2)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        _min_span(ax, float(sub["ndcg@10"].astype(float).mean()))
        ax.set_title(family_setting(fam), fontsize=9)
        ax.set_ylabel("test NDCG@10 (dots: seeds, bar: mean)")
        ax.grid(axis="y", alpha=0.3)
    note = "Equal epoch budget (verdict-cpu preset), early stopping on held-out validation; test at the best validation epoch; full ranking."
    return save_figure(fig, ok[["family", "label", "model", "options", "seed", "ndcg@10", "hr@10", "config_hash"]], out_dir, "accuracy-families", note)


def _min_span(ax: plt.Axes, centre: float, rel: float = 0.10) -> None:
    """Widen the y axis to at least ``rel`` of ``centre``, so that a 0.1 % gap between two runs
    does not fill the panel as if it were a large one."""
    lo, hi = ax.get_ylim()
    if centre > 0 and hi - lo < rel * centre:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - rel * centre / 2, mid + rel * centre / 2)


def bank_accuracy(ok: pd.DataFrame) -> pd.DataFrame:
    """``elastic`` accuracy rows with their bank size ``M``, family and, where the family has a
    bank-less run, its mean test NDCG@10 (``no_bank``) and each run's change against it in %."""
    ok = ok.copy()
    ok["M"] = ok["memory_size"].map(_num)
    ok["family"] = ok.apply(family_of, axis=1)
    ok["ndcg@10"] = ok["ndcg@10"].astype(float)
    ok["no_bank"] = ok["family"].map(ok[ok["M"] == 0].groupby("family")["ndcg@10"].mean())
    ok["vs_no_bank_pct"] = 100.0 * (ok["ndcg@10"] / ok["no_bank"] - 1.0)
    return ok


def plot_memory_bank(acc: pd.DataFrame, bank: pd.DataFrame, out_dir: Path) -> list[Path]:
    ok = acc[(acc["status"] == "ok") & (acc["model"] == "elastic")].copy()
    lat = bank_latency(bank) if not bank.empty else pd.DataFrame()
    if ok.empty and lat.empty:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = lambda m: [max(float(v), 256.0) for v in m]  # noqa: E731 - M = 0 drawn at the left edge
    if not ok.empty:
        ok = bank_accuracy(ok)
        relative = ok["family"].nunique() > 1 and ok["vs_no_bank_pct"].notna().all()  # datasets of unlike scale: each against its own no-bank mean
        col = "vs_no_bank_pct" if relative else "ndcg@10"
        for i, (fam, g) in enumerate(sorted(ok.groupby("family"), key=lambda kv: kv[0].count(", "))):  # ML-1M first
            axes[0].scatter(x(g["M"]), g[col], s=18, color=f"C{i}", zorder=3)
            mean = g.groupby("M")[col].mean()
            label = family_setting(fam).split(",")[0] + (f" (no bank: {g['no_bank'].iloc[0]:.4f})" if relative else "")
            axes[0].plot(x(mean.index), mean.values, color=f"C{i}", label=label)
        if relative:
            axes[0].axhline(0.0, color="black", lw=0.8)
            _min_span(axes[0], 1.0, rel=10.0)  # at least 10 points of percentage
            axes[0].set_ylabel("test NDCG@10 vs no bank (%)")
        else:
            _min_span(axes[0], float(ok["ndcg@10"].mean()))
            axes[0].set_ylabel("test NDCG@10 (objective last)")
        if ok["family"].nunique() > 1:
            axes[0].legend(fontsize=7)
    axes[0].set(xscale="log", xlabel="memory slots M (0 drawn at 256)")
    if not lat.empty:
        for (pass_, n, sparse), g in lat.groupby(["pass", "seq_len", "sparse_grad"]):
            ax = axes[1] if pass_ == "infer" else axes[2]
            label = f"{pass_} N={n}" + ((" sparse grad" if sparse else " dense grad") if pass_ == "train_step" else "")
            ax.errorbar(x(g["memory_size"]), g["vs_no_bank"], yerr=[(g["vs_no_bank"] - g["vs_no_bank_ci_lo"]).clip(lower=0).fillna(0),
                        (g["vs_no_bank_ci_hi"] - g["vs_no_bank"]).clip(lower=0).fillna(0)], marker="o", ms=3, capsize=2, label=label)  # fmt: skip
        params = lat.drop_duplicates("memory_size").sort_values("memory_size")
        xs = x(params["memory_size"]) + (x(ok["M"]) if not ok.empty else [])
        axes[0].set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # every bank size swept, trained or not yet
        top = axes[0].twiny()  # parameters as a second x scale: the same slots, counted in weights
        top.set(xscale="log", xlim=axes[0].get_xlim())
        top.set_xticks(x(params["memory_size"]), [f"{float(v) / 1e6:.1f}M" for v in params["params"]], fontsize=7)
        top.minorticks_off()
        top.set_xlabel("parameters at ML-1M's shape", fontsize=8)
    for ax, title in ((axes[1], "inference latency / no bank"), (axes[2], "train step latency / no bank")):
        ax.axhline(1.0, color="black", lw=0.8)
        ax.axhline(FLAT, color="0.5", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="memory slots M (0 drawn at 256)", ylabel=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    note = f"Dotted: {FLAT:.2f}x (the 'flat' rule). Error bars: 95 % bootstrap CI of the latency ratio. Accuracy runs use dense bank gradients."
    if not ok.empty:
        note = "Accuracy: dots are seeds, the line their mean" + (", each dataset against its own no-bank mean. " if relative else ". ") + note
    data = lat if not lat.empty else ok
    return save_figure(fig, data, out_dir, "memory-bank", note)


def learning_curves(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for p in sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []:
        d = json.loads(p.read_text())
        cfg = d.get("config", {})
        opts = "causal=False" if cfg.get("causal") is False else ""
        label = model_label(pd.Series({"model": d.get("model"), "memory_size": (cfg.get("options") or {}).get("memory_size"), "options": opts}))
        for h in d.get("history", []):
            family = family_of(pd.Series({"objective": d.get("objective"), "seq_len": cfg.get("max_len"), "dataset": cfg.get("data")}))
            rows.append({"run": p.stem, "label": label, "family": family, "objective": d.get("objective"), "max_len": cfg.get("max_len"), "seed": cfg.get("seed"),
                         "epoch": h.get("epoch"), "epoch_s": h.get("epoch_s"), "valid_ndcg@10": h.get("valid_ndcg@10"),
                         "stopped": d.get("stopped", "")})  # fmt: skip
    return pd.DataFrame(rows)


def plot_learning_curves(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    if curves.empty:
        return []
    groups = sorted(curves["family"].unique(), key=lambda f: (f.count(", "), f))  # ML-1M's families first, as in the accuracy figure
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], groups):
        sub = curves[curves["family"] == fam]
        for (label, seed), g in sub.groupby(["label", "seed"]):
            ax.plot(g["epoch"], g["valid_ndcg@10"], lw=1, label=f"{label} s{seed}")
        ax.set_title(family_setting(fam), fontsize=9)
        ax.set(xlabel="epoch", ylabel="validation NDCG@10")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return save_figure(fig, curves, out_dir, "learning-curves", "Validation NDCG@10 per epoch of every finished run (results/<preset>/runs/*.json).")


def long_history_table(acc: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    ok = acc[(acc["status"] == "ok") & (acc["objective"] == "all") & acc["model"].isin(["softmax", "elastic-causal"]) & (acc["seed"].astype(int) == 0)]
    out = []
    for _, r in ok.sort_values(["seq_len", "model"]).iterrows():
        c = curves[(curves["run"] == f"{r['model']}-{r['config_hash']}")] if not curves.empty else curves
        epoch_s = float(c["epoch_s"].median()) if not c.empty else math.nan
        out.append({"model": r["model"], "max_len": int(_num(r["seq_len"])), "test NDCG@10": round(_num(r["ndcg@10"]), 4),
                    "median epoch s": round(epoch_s, 1), "peak memory MB": _num(r["peak_mem_mb"]), "cpu threads": r.get("cpu_threads"),
                    "stopped": str(r.get("reason", "")).split("stopped=")[-1], "row": r["config_hash"]})  # fmt: skip
    return pd.DataFrame(out)


def plot_long_histories(long: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Test NDCG@10, median epoch time and peak memory at each max length, per model (seed 0)."""
    if long.empty:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    models = sorted(long["model"].unique())
    lens = sorted(long["max_len"].unique())
    width = 0.8 / max(len(models), 1)
    for ax, col in zip(axes, ("test NDCG@10", "median epoch s", "peak memory MB")):
        for i, m in enumerate(models):
            sub = long[long["model"] == m].set_index("max_len").reindex(lens)
            bars = ax.bar([j + i * width for j in range(len(lens))], sub[col].astype(float), width, label=m, color=f"C{i}")
            ax.bar_label(bars, fmt="%.4f" if col == "test NDCG@10" else "%.0f", fontsize=7, padding=1)
        ax.margins(y=0.12)  # room for the value labels
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(lens))], [f"max len {n}" for n in lens])
        ax.set_ylabel(col)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(models), fontsize=8, frameon=False)  # above the bars, not on one
    note = "ML-1M, objective all, seed 0, one thread; epoch time: the training loop of one epoch (evaluation excluded); peak memory: the training process's own."
    return save_figure(fig, long, out_dir, "long-histories", note)


# ----------------------------------------------------------------------------- writing


def load(paths: Iterable[Path], strict: bool = True) -> pd.DataFrame:
    """The rows of ``paths`` (results CSVs); ``strict=False`` passes over files of another schema
    (a GPU session's kernel-check CSVs beside its sweep)."""
    frames = []
    for p in paths:
        if not Path(p).is_file():
            continue
        try:
            frames.append(load_results(p))
        except Exception:  # noqa: BLE001 - not a results CSV
            if strict:
                raise
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS_OF_RESULTS))


def write_verdict(results_dir: Path, out_dir: Path, pending: list[str], gpu_dir: Path = Path("results/gpu"), name: str = "verdict") -> list[Path]:
    """The claims table (Markdown, LaTeX, CSV), its figures and ``verdict.md`` from the CSVs of
    ``results_dir`` (``accuracy.csv``, ``throughput.csv``, ``serving.csv``, ``memory-bank*.csv``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    acc = load([results_dir / "accuracy.csv"])
    eff = load([results_dir / "throughput.csv", results_dir / "serving.csv"])
    bank = load(sorted(results_dir.glob("memory-bank*.csv")))
    gpu = load(sorted(gpu_dir.rglob("*.csv")), strict=False) if gpu_dir.is_dir() else None
    if gpu is not None and not gpu.empty and "device" in gpu:
        gpu = gpu[gpu["device"].astype(str).str.startswith("cuda") & gpu.get("task", pd.Series("efficiency", index=gpu.index)).eq("efficiency")]
    table = claims_table(eff, acc, bank, gpu)
    files = []
    table.to_csv(out_dir / "claims.csv", index=False)
    (out_dir / "claims.tex").write_text(to_latex(table, f"ELASTIC's claims tested ({name}); rules in claims.md", f"tab:{name}-claims"))
    curves = learning_curves(results_dir / "runs")
    long = long_history_table(acc, curves)
    stats = seed_stats(acc)
    md = [f"# The verdict ({name})", "", "Generated from the CSVs alone (`elastic-bench figures --preset " + name + " --from-csv`).", "",
          "## Summary", "", to_markdown(summary(table)),
          "Counts are rows of the claims table below. The memory and speed claims are tested in every regime measured "
          "(`infer`, `train_step`, `serve`, `serve_step`), against softmax and against the best exact backend, each a row of "
          "its own: the `train_step` rows test them beyond the paper's inference wording, so read the rows, not only the counts.",
          "", "## Rules", ""]  # fmt: skip
    md += [f"- **{k}**: {v}." for k, v in RULES.items()]
    md += ["", "## Protocol", "",
           "- Accuracy: ML-1M, the `sasrec-ml1m` protocol (full ranking with the input window removed, SASRec's block, d=50, 2 blocks, "
           "1 head, sampled softmax with 128 negatives, T=0.05, batch 128, lr 1e-3), one epoch budget and early stopping for every model; "
           "the validation item is held out of training in both families, and test is read at the best validation epoch.",
           "- Causal family: objective `all` (every position predicts its next item, per-position negatives). "
           "Last-position family: objective `last` (the last position of each prefix; per user and epoch, one random prefix and the whole "
           "history). There softmax keeps SASRec's causal mask and `elastic` is non-causal (its dispatcher pools the whole history): the "
           "scored last position reads the whole history in both, but earlier positions, which feed it in the second block, see "
           "only their past under softmax, so that comparison differs in causality as well as in mechanism; softmax (non-causal), "
           "trained without its mask (`train --non-causal`), is the like-for-like one.",
           *(["- A second dataset for the memory-bank ablation (where ML-1M cannot separate the bank sizes): "
              + ", ".join(sorted({DATASET_TITLES.get(str(d), str(d)) for d in acc["dataset"] if str(d) not in ("ml-1m", "nan")}))
              + ", the same protocol and budget in SASRec's shape for it (max length 50, dropout 0.5), objective `last`; its rows are a family of their own."]
             if not acc.empty and "dataset" in acc and (~acc["dataset"].astype(str).isin(["ml-1m", "nan"])).any() else []),
           "- Efficiency: the preset's sweeps on this machine (`results/<preset>/throughput.csv`, `serving.csv`, `memory-bank*.csv`), "
           "at the accuracy runs' shape.", "",
           "## Claims", "", to_markdown(table.drop(columns=["paper"])), "## Accuracy by seed (test NDCG@10)", "",
           "Mean and sample standard deviation (n - 1) across seeds; `rows` are the config hashes of the seeds' rows.", "",
           to_markdown(_seed_table(stats)), ]  # fmt: skip
    conv = convergence_table(curves)
    md += ["## Convergence (validation NDCG@10)", "", to_markdown(conv), convergence_note(conv), ""]
    md += ["## Long histories (objective all, seed 0)", "", to_markdown(long)]
    md += ["## Budget", "", budget_text(acc, curves, pending), ""]
    md += ["## Pending", ""] + ([f"- {p}" for p in pending] or ["- nothing: every planned cell has a row"]) + [""]
    (out_dir / "claims.md").write_text(to_markdown(table))
    (out_dir / "verdict.md").write_text("\n".join(md))
    files += [out_dir / "claims.csv", out_dir / "claims.tex", out_dir / "claims.md", out_dir / "verdict.md"]
    files += plot_accuracy_families(acc, out_dir)
    files += plot_memory_bank(acc, bank, out_dir)
    files += plot_learning_curves(curves, out_dir)
    files += plot_long_histories(long, out_dir)
    if not eff.empty:  # the sweeps' own figures: latency, speed-up and memory vs N, serving
        from .plots import plot_results

        files += plot_results(eff, baseline="softmax", out_dir=out_dir / "efficiency")
    return files
