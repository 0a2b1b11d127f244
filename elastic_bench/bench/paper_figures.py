"""The paper figures, regenerated from results CSVs alone (PNG + PDF + the CSV subset each).

- ``ablation-<axis>``           accuracy (NDCG@10, mean ± std over seeds, left axis) and
                                inference latency p50 (right axis, dashed) vs the ablated value
- ``ablation-<axis>-capacity``  parameters (total and memory bank) and FLOPs per sequence
                                vs the ablated value: "capacity without compute"
- ``pareto-latency``            accuracy vs inference latency, every configuration, the
                                non-dominated front drawn as a line
- ``pareto-memory``             accuracy vs inference peak memory, likewise
- ``claim-check``               ELASTIC's peak-memory reduction and inference speed-up vs
                                softmax and vs the fastest FlashAttention-class backend
                                (``sdpa*``, ``flash-attn``, ``xformers``) against sequence
                                length, with the paper's 90 % and ×2.7 as reference lines

Accuracy and efficiency rows are joined per configuration (:data:`CONFIG_KEYS`: model,
resolved options, width, heads, layers) by :func:`joined`; the efficiency row used is the
``infer`` row at the accuracy run's max length, or the nearest length measured.

Example::

    >>> df = load_results(["results/ablate-memory-size-ml-1m.csv"])
    >>> plot_ablation(df, "memory-size", "reports/ablate-memory-size-ml-1m")
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .ablation_axes import Axis, axis_values, get_axis, value_label  # noqa: E402
from .accounting import with_accounting  # noqa: E402
from .compare import MATCH_KEYS, _keep, _parse_options  # noqa: E402
from .plots import _log2_x, _save, footnote  # noqa: E402
from .report import CLAIM_MEMORY, CLAIM_SPEEDUP, is_elastic, is_flash_class  # noqa: E402

CONFIG_KEYS = ("model", "options", "d_model", "heads", "layers")
METRIC = "ndcg@10"
ACC_METRICS = ("hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50", "hr@200", "ndcg@200", "mrr@200")


def _rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    return df[(df["task"] == task) & (df["status"] == "ok")].copy()


def config_labels(df: pd.DataFrame) -> pd.Series:
    """``model [options that vary] (d/h/L when they vary)`` per row."""
    if df.empty:
        return pd.Series([], dtype=str)
    parsed = [_parse_options(o) for o in df["options"].fillna("").astype(str)]
    keys = set().union(*parsed) if parsed else set()
    varying = {k for k in keys if len({p.get(k) for p in parsed if k in p}) > 1}
    labels = []
    shape_vary = [k for k in ("d_model", "heads", "layers") if df[k].nunique() > 1]
    for (_, r), o in zip(df.iterrows(), df["options"].fillna("").astype(str)):
        kept = _keep(o, varying)
        lab = f"{r['model']} [{kept}]" if kept else str(r["model"])
        if shape_vary:
            lab += " (" + " ".join(f"{k[0]}={int(r[k])}" for k in shape_vary) + ")"
        labels.append(lab)
    return pd.Series(labels, index=df.index)


def accuracy_summary(df: pd.DataFrame, metrics: tuple[str, ...] = ACC_METRICS) -> pd.DataFrame:
    """Mean, std and seed count of every metric per configuration and max length."""
    acc = _rows(df, "accuracy")
    if acc.empty:
        return pd.DataFrame()
    acc["label"] = config_labels(acc)
    keys = list(CONFIG_KEYS) + ["seq_len", "label"]
    metrics = tuple(m for m in metrics if m in acc and acc[m].notna().any())
    g = acc.groupby(keys, sort=True, dropna=False)
    out = g.agg(seeds=("seed", "nunique"), params=("params", "first"), memory_size=("memory_size", "first"),
                experts=("experts", "first"), dataset=("dataset", "first"))  # fmt: skip
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return out.reset_index()


def joined(df: pd.DataFrame, pass_: str = "infer") -> pd.DataFrame:
    """:func:`accuracy_summary` plus the matching efficiency row's latency, memory and FLOPs."""
    summ = accuracy_summary(df)
    if summ.empty:
        return summ
    eff = _rows(df, "efficiency")
    eff = eff[eff["pass"] == pass_] if not eff.empty else eff
    cols = {"latency_ms_p50": np.nan, "latency_ms_p20": np.nan, "latency_ms_p80": np.nan, "n_samples": np.nan,
            "peak_mem_mb_eff": np.nan, "act_mem_mb": np.nan, "flops": np.nan, "eff_seq_len": np.nan, "eff_batch": np.nan}  # fmt: skip
    extra = []
    for _, r in summ.iterrows():
        row = dict(cols)
        if not eff.empty:
            same = eff[np.logical_and.reduce([eff[k].astype(str) == str(r[k]) for k in CONFIG_KEYS])]
            if not same.empty:
                dist = (np.log2(same["seq_len"].astype(float)) - math.log2(float(r["seq_len"]))).abs()
                e = same.assign(_d=dist).sort_values(["_d", "seq_len", "batch"]).iloc[0]
                row.update(latency_ms_p50=e["latency_ms_p50"], latency_ms_p20=e["latency_ms_p20"], latency_ms_p80=e["latency_ms_p80"],
                           n_samples=e["n_samples"], peak_mem_mb_eff=e["peak_mem_mb"], act_mem_mb=e["act_mem_mb"],
                           flops=e["flops"], eff_seq_len=e["seq_len"], eff_batch=e["batch"])  # fmt: skip
        extra.append(row)
    out = pd.concat([summ, pd.DataFrame(extra, index=summ.index)], axis=1)
    out = with_accounting(out.assign(task="accuracy"))  # memory_params / compute_params from the config
    return out.drop(columns=["task", "flops_analytic"])


def pareto_front(x: pd.Series, y: pd.Series) -> np.ndarray:
    """Boolean mask of the points no other point beats on both (lower x, higher y)."""
    xs, ys = x.to_numpy(float), y.to_numpy(float)
    keep = np.ones(len(xs), dtype=bool)
    for i in range(len(xs)):
        if not (np.isfinite(xs[i]) and np.isfinite(ys[i])):
            keep[i] = False
            continue
        dominated = (xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i]))
        keep[i] = not dominated.any()
    return keep


def _note(df: pd.DataFrame, extra: str = "") -> str:
    base = footnote(df, None) if not df.empty and "created_at" in df else ""
    return " · ".join(p for p in (base, extra) if p)


# ----------------------------------------------------------------------------- ablations


def _categorical_x(ax: plt.Axes, values: list, label: str) -> dict:
    pos = {v: i for i, v in enumerate(values)}
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([value_label(v) for v in values])
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)
    return pos


def _sorted_values(s: pd.Series) -> list:
    vals = list(dict.fromkeys(s.dropna().tolist()))
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)


def ablation_data(df: pd.DataFrame, axis: str | Axis, metric: str = METRIC) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """(accuracy per model × value: mean/std/seeds, efficiency rows per model × value at one
    length, that length).  The length is the accuracy runs' max length when measured, else the longest."""
    ax = axis if isinstance(axis, Axis) else get_axis(axis)
    acc = _rows(df, "accuracy")
    eff = _rows(df, "efficiency")
    eff = eff[eff["pass"] == "infer"] if not eff.empty else eff
    a = pd.DataFrame()
    if not acc.empty and metric in acc:
        acc["value"] = axis_values(acc, ax)
        g = acc.groupby(["model", "value"], sort=True, dropna=False)[metric]
        a = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "seeds": g.count()}).reset_index()
    n = None
    e = pd.DataFrame()
    if not eff.empty:
        lens = set(eff["seq_len"].astype(int))
        acc_lens = set(acc["seq_len"].astype(int)) if not acc.empty else set()
        n = max(lens & acc_lens) if lens & acc_lens else max(lens)
        e = eff[eff["seq_len"] == n].copy()
        e["value"] = axis_values(e, ax)
        e = with_accounting(e)
        keep = ["model", "value", "seq_len", "batch", "latency_ms_p50", "latency_ms_p20", "latency_ms_p80", "peak_mem_mb",
                "params", "memory_params", "compute_params", "flops", "flops_method", "flops_analytic", "config_hash"]  # fmt: skip
        e = e[keep].sort_values(["model", "seq_len"]).drop_duplicates(subset=["model", "value"], keep="first")
    return a, e, n


def plot_ablation(df: pd.DataFrame, axis: str | Axis, out_dir: str | Path, metric: str = METRIC) -> list[Path]:
    """``ablation-<axis>`` and ``ablation-<axis>-capacity`` (see the module docstring)."""
    ax_def = axis if isinstance(axis, Axis) else get_axis(axis)
    a, e, n = ablation_data(df, ax_def, metric)
    out = Path(out_dir)
    written: list[Path] = []
    if a.empty and e.empty:
        return written
    out.mkdir(parents=True, exist_ok=True)
    # models without the axis (e.g. softmax on memory-size) are horizontal reference lines
    a, a_ref = _split_reference(a)
    e, e_ref = _split_reference(e)
    values = _sorted_values(pd.concat([a.get("value", pd.Series(dtype=object)), e.get("value", pd.Series(dtype=object))]))
    models = sorted(set(a.get("model", pd.Series(dtype=str))) | set(e.get("model", pd.Series(dtype=str))))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pos = _categorical_x(ax, values, ax_def.label)
    ax2 = ax.twinx()
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    for m in models:
        s = a[a["model"] == m] if not a.empty else a
        if not s.empty:
            ax.errorbar([pos[v] for v in s["value"]], s["mean"], yerr=s["std"], marker="o", capsize=3, color=colors[m],
                        label=f"{m}: {metric.upper()} (mean ± std)")  # fmt: skip
        t = e[e["model"] == m] if not e.empty else e
        if not t.empty:
            ax2.plot([pos[v] for v in t["value"]], t["latency_ms_p50"], ls="--", marker="s", ms=4, color=colors[m],
                     label=f"{m}: latency p50")  # fmt: skip
    for i, (_, r) in enumerate(a_ref.iterrows()):
        ax.axhline(r["mean"], color=f"C{len(models) + i}", lw=1, label=f"{r['model']} (no {ax_def.name}): {metric.upper()}")
    for i, (_, r) in enumerate(e_ref.iterrows()):
        ax2.axhline(r["latency_ms_p50"], color=f"C{len(models) + i}", lw=1, ls="--", label=f"{r['model']} (no {ax_def.name}): latency p50")
    ax.set_ylabel(f"test {metric.upper()} (mean ± std over seeds)")
    ax2.set_ylabel(f"inference latency p50 (ms, N={n})" if n else "inference latency p50 (ms)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    ax.set_title(f"Ablation: {ax_def.label}")
    subset = _subset(pd.concat([a, a_ref]), pd.concat([e, e_ref]))
    written += _save(fig, subset, out, f"ablation-{ax_def.name}", _note(df[df["status"] == "ok"], f"latency at N={n}" if n else ""))
    if not e.empty and e["params"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        pos = _categorical_x(ax, values, ax_def.label)
        ax2 = ax.twinx()
        for m in models:
            t = e[e["model"] == m]
            if t.empty:
                continue
            x = [pos[v] for v in t["value"]]
            ax.plot(x, t["params"] / 1e6, marker="o", color=colors[m], label=f"{m}: parameters (total)")
            if t["memory_params"].gt(0).any():
                ax.plot(x, t["memory_params"] / 1e6, marker="^", ls=":", color=colors[m], label=f"{m}: of which memory bank")
            ax2.plot(x, t["flops"] / t["batch"] / 1e6, marker="s", ls="--", color=colors[m], label=f"{m}: FLOPs/seq ({t['flops_method'].iloc[0]})")
            if t["flops_analytic"].notna().any():
                ax2.plot(x, t["flops_analytic"] / t["batch"] / 1e6, marker="x", ls="-.", color=colors[m], label=f"{m}: FLOPs/seq (analytic)")
        ax.set_ylabel("parameters (millions)")
        ax2.set_ylabel(f"forward FLOPs per sequence (MFLOP, N={n})")
        ax2.set_ylim(bottom=0)
        ax.set_ylim(bottom=0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
        ax.set_title(f"Capacity vs compute: {ax_def.label}")
        written += _save(fig, e.reset_index(drop=True), out, f"ablation-{ax_def.name}-capacity", _note(df[df["status"] == "ok"], "memory bank = M·d + √M·d (values + sub-keys)"))
    return written


def _split_reference(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with a value on the axis, rows without one)."""
    if t.empty:
        return t, t
    has = t["value"].notna() & (t["value"].astype(str) != "")
    return t[has], t[~has]


def _subset(a: pd.DataFrame, e: pd.DataFrame) -> pd.DataFrame:
    a2 = a.assign(kind="accuracy") if not a.empty else pd.DataFrame()
    e2 = e.assign(kind="efficiency") if not e.empty else pd.DataFrame()
    return pd.concat([a2, e2], ignore_index=True, sort=False)


# ----------------------------------------------------------------------------- Pareto fronts


def plot_pareto(df: pd.DataFrame, out_dir: str | Path, metric: str = METRIC) -> list[Path]:
    """``pareto-latency`` and ``pareto-memory`` from the joined accuracy × efficiency table."""
    j = joined(df)
    written: list[Path] = []
    if j.empty or f"{metric}_mean" not in j:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, col, xlabel in (("latency", "latency_ms_p50", "inference latency p50 (ms, log)"),
                              ("memory", "peak_mem_mb_eff", "inference peak memory (MB, log)")):  # fmt: skip
        pts = j[j[col].notna() & j[f"{metric}_mean"].notna()].copy()
        if pts.empty:
            continue
        pts["on_front"] = pareto_front(pts[col], pts[f"{metric}_mean"])
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for i, (_, r) in enumerate(pts.iterrows()):
            ax.errorbar(r[col], r[f"{metric}_mean"], yerr=r[f"{metric}_std"], marker="o" if r["on_front"] else "x", color=f"C{i % 10}",
                        capsize=3, ls="none", label=r["label"])  # fmt: skip
        front = pts[pts["on_front"]].sort_values(col)
        ax.step(front[col], front[f"{metric}_mean"], where="post", color="0.3", lw=1, ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric.upper()} (mean ± std over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        lens = sorted(set(pts["eff_seq_len"].dropna().astype(int)))
        ax.set_title(f"Accuracy–{name} Pareto front")
        written += _save(fig, pts.reset_index(drop=True), out, f"pareto-{name}",
                         _note(df[df["status"] == "ok"], f"efficiency at N={','.join(map(str, lens))}, pass infer"))  # fmt: skip
    return written


# ----------------------------------------------------------------------------- claim check


def claim_check_data(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric claim check: per ELASTIC infer row, speed-up and peak-memory reduction vs softmax
    and vs the fastest FlashAttention-class backend measured alike (same :data:`MATCH_KEYS`)."""
    eff = _rows(df, "efficiency")
    if eff.empty:
        return pd.DataFrame()
    eff = eff[eff["pass"] == "infer"]
    keys = [k for k in MATCH_KEYS if k in eff]
    eff = eff.assign(_key=eff[keys].astype(str).agg("|".join, axis=1))
    eff["label"] = config_labels(eff) if not eff.empty else []
    rows = []
    for _, e in eff[eff["model"].map(is_elastic)].iterrows():
        same = eff[eff["_key"] == e["_key"]]
        row = {"model": e["label"], "level": e["level"], "device_name": e["device_name"], "dtype": e["dtype"], "seq_len": int(e["seq_len"]),
               "batch": int(e["batch"]), "latency_ms_p50": e["latency_ms_p50"], "peak_mem_mb": e["peak_mem_mb"]}  # fmt: skip
        for ref, cand in (("softmax", same[same["model"] == "softmax"]), ("flash", same[same["model"].map(is_flash_class)])):
            if cand.empty:
                row.update({f"{ref}_model": "", f"speedup_vs_{ref}": np.nan, f"mem_reduction_vs_{ref}": np.nan})
                continue
            b = cand.sort_values("latency_ms_p50").iloc[0]
            row.update({f"{ref}_model": b["model"], f"speedup_vs_{ref}": b["latency_ms_p50"] / e["latency_ms_p50"],
                        f"mem_reduction_vs_{ref}": 1 - e["peak_mem_mb"] / b["peak_mem_mb"]})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def plot_claim_check(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``claim-check`` (one figure per level/device/dtype when several)."""
    cc = claim_check_data(df)
    written: list[Path] = []
    if cc.empty or (cc["speedup_vs_softmax"].isna().all() and cc["speedup_vs_flash"].isna().all()):
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = list(cc.groupby(["level", "device_name", "dtype"], sort=True))
    for (level, dev, dtype), sub in groups:
        suffix = "" if len(groups) == 1 else f"-{level}-{dtype}-{str(dev).replace(' ', '_')[:20]}"
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for i, (model, s) in enumerate(sub.sort_values("seq_len").groupby("model", sort=True)):
            for ref, ls in (("softmax", "-"), ("flash", "--")):
                if s[f"speedup_vs_{ref}"].notna().any():
                    who = "softmax" if ref == "softmax" else "best flash-class (" + ",".join(sorted(set(s["flash_model"]) - {""})) + ")"
                    axes[0].plot(s["seq_len"], 100 * s[f"mem_reduction_vs_{ref}"], marker="o", ms=3, ls=ls, color=f"C{i}", label=f"{model} vs {who}")
                    axes[1].plot(s["seq_len"], s[f"speedup_vs_{ref}"], marker="o", ms=3, ls=ls, color=f"C{i}", label=f"{model} vs {who}")
        axes[0].axhline(100 * CLAIM_MEMORY, color="tab:red", lw=1.2, ls=":", label=f"paper: {CLAIM_MEMORY:.0%} less memory")
        axes[0].axhline(0, color="0.3", lw=0.8)
        axes[0].set_ylabel("peak memory reduction (%)")
        axes[0].set_title("Memory reduction (inference)", fontsize=10)
        axes[1].axhline(CLAIM_SPEEDUP, color="tab:red", lw=1.2, ls=":", label=f"paper: ×{CLAIM_SPEEDUP} faster")
        axes[1].axhline(1.0, color="0.3", lw=0.8)
        axes[1].set_yscale("log", base=2)
        axes[1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"×{v:g}"))
        axes[1].set_ylabel("inference speed-up (×, log₂)")
        axes[1].set_title("Speed-up (inference)", fontsize=10)
        for a in axes:
            _log2_x(a)
            a.legend(fontsize=6)
        fig.suptitle("Claim check: ELASTIC vs softmax (solid) and the fastest FlashAttention-class backend (dashed)", fontsize=10)
        rows = df[(df["task"] == "efficiency") & (df["status"] == "ok")]
        written += _save(fig, sub.reset_index(drop=True), out, f"claim-check{suffix}", _note(rows[rows["dtype"] == dtype]) if not rows.empty else "")
    return written
