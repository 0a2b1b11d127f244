"""The paper figures, regenerated from results CSVs alone (PNG + PDF + the CSV subset each).

- ``ablation-<axis>``           accuracy (NDCG@10, mean ± std over seeds, left axis) and
                                inference latency p50 (right axis, dashed) vs the ablated value
- ``ablation-<axis>-capacity``  parameters (total and memory bank) and FLOPs per sequence
                                vs the ablated value: "capacity without compute"
- ``pareto-latency``            accuracy vs inference latency, every configuration, the
                                non-dominated front drawn as a line
- ``pareto-memory``             accuracy vs inference peak memory, likewise
- ``claim-check``               ELASTIC's inference speed-up and peak-memory reduction vs
                                eager softmax (the paper's "standard attention", solid) and
                                vs the best exact backend measured alike (dashed): the
                                fastest one for speed, the lowest-memory one for memory
                                (exact = ``softmax``, ``sdpa*``, ``flash-attn``, ``xformers``),
                                against sequence length, with the paper's 90 % and ×2.7 as
                                reference lines; CPU figures say "not evidence for the GPU claim"

Every label names the series' causality (``elastic (non-causal)``), every comparison pairs
rows of the same causality (:data:`.compare.MATCH_KEYS`), FLOPs are labelled with their
``flops_method`` (a partial count is called a lower bound), and error bars say which variance
they are: accuracy = std over seeds; latency = 95 % bootstrap CI of the median from the
timing samples of one seed's model (or "CI unavailable" without raw samples).

Accuracy and efficiency rows are joined per configuration (:data:`CONFIG_KEYS`: model,
resolved options, width, heads, layers, and causality where the accuracy row records it or
its objective implies it: ``all`` needs a causal model) by :func:`joined`; the efficiency row
used is the ``infer`` row at the accuracy run's max length, or the nearest length measured.

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

from ..measure.bootstrap import rows_ratio_ci  # noqa: E402
from .ablation_axes import Axis, axis_values, get_axis, value_label  # noqa: E402
from .accounting import flops_is_partial, flops_label, with_accounting  # noqa: E402
from .compare import (  # noqa: E402
    MATCH_KEYS,
    _keep,
    _parse_options,
    causal_value,
    causality_text,
    is_exact,
    with_latency_ci,
)
from .figure_kit import footnote, log2_x, save_figure  # noqa: E402
from .markdown import CLAIM_MEMORY, CLAIM_SPEEDUP, CPU_NOTE, is_elastic  # noqa: E402

CONFIG_KEYS = ("model", "options", "d_model", "heads", "layers")
METRIC = "ndcg@10"
ACC_METRICS = ("hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50", "hr@200", "ndcg@200", "mrr@200")


def _rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    return df[(df["task"] == task) & (df["status"] == "ok")].copy()


def row_causality(model: object, causal: object, objective: object = "") -> bool | None:
    """Causality of a row: its ``causal`` cell; else ``objective == all`` (only a causal model may
    train on every position); else the backend's declared capability (what the trainer uses); else None."""
    c = causal_value(causal)
    if c is not None:
        return c
    if str(objective) == "all":
        return True
    try:
        from ..registry import (
            get,  # the backend's declaration, as `elastic-bench train` resolves it
        )

        return bool(get(str(model)).capabilities.causal)
    except Exception:  # unknown or unloadable backend: not recorded
        return None


def causality_labels(df: pd.DataFrame) -> pd.Series:
    """``causal`` | ``non-causal`` | ``causality not recorded`` per row (:func:`row_causality`)."""
    if df.empty:
        return pd.Series([], dtype=str)
    obj = df["objective"] if "objective" in df else pd.Series("", index=df.index)
    cau = df["causal"] if "causal" in df else pd.Series("", index=df.index)
    return pd.Series([causality_text(row_causality(m, c, o)) for m, c, o in zip(df["model"], cau, obj)], index=df.index)


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
    acc["causality"] = causality_labels(acc)
    keys = list(CONFIG_KEYS) + ["seq_len", "label", "causality"]
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
    eff = with_latency_ci(eff) if not eff.empty else eff
    if not eff.empty:
        eff = eff.assign(causality=causality_labels(eff))
    cols = {"latency_ms_p50": np.nan, "latency_ms_p20": np.nan, "latency_ms_p80": np.nan, "n_samples": np.nan, "n_repeats": np.nan,
            "latency_ms_ci_lo": np.nan, "latency_ms_ci_hi": np.nan, "latency_samples_ms": "", "peak_mem_mb_eff": np.nan,
            "act_mem_mb": np.nan, "flops": np.nan, "flops_method": "", "eff_seq_len": np.nan, "eff_batch": np.nan,
            "eff_padding": "", "eff_threads": np.nan}  # fmt: skip
    extra = []
    for _, r in summ.iterrows():
        row = dict(cols)
        if not eff.empty:
            same = eff[np.logical_and.reduce([eff[k].astype(str) == str(r[k]) for k in CONFIG_KEYS])]
            if r["causality"] != "causality not recorded":  # latency of the causality the model was trained in
                same = same[same["causality"] == r["causality"]]
            if not same.empty:
                dist = (np.log2(same["seq_len"].astype(float)) - math.log2(float(r["seq_len"]))).abs()
                e = same.assign(_d=dist).sort_values(["_d", "seq_len", "batch"]).iloc[0]
                row.update(latency_ms_p50=e["latency_ms_p50"], latency_ms_p20=e["latency_ms_p20"], latency_ms_p80=e["latency_ms_p80"],
                           n_samples=e["n_samples"], n_repeats=e["n_repeats"], latency_ms_ci_lo=e["latency_ms_ci_lo"],
                           latency_ms_ci_hi=e["latency_ms_ci_hi"], latency_samples_ms=e.get("latency_samples_ms", ""),
                           peak_mem_mb_eff=e["peak_mem_mb"], act_mem_mb=e["act_mem_mb"], flops=e["flops"],
                           flops_method=e.get("flops_method", ""), eff_seq_len=e["seq_len"], eff_batch=e["batch"],
                           eff_padding=e.get("padding", ""), eff_threads=e.get("cpu_threads", np.nan))  # fmt: skip
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
    """(accuracy per model × causality × value: mean/std/seeds, efficiency rows per model × causality ×
    value at one length, that length).  The length is the accuracy runs' max length when measured, else
    the longest; a model's efficiency rows are those of the causality it was trained in, when known."""
    ax = axis if isinstance(axis, Axis) else get_axis(axis)
    acc = _rows(df, "accuracy")
    eff = _rows(df, "efficiency")
    eff = eff[eff["pass"] == "infer"] if not eff.empty else eff
    a = pd.DataFrame()
    trained: dict[str, set[str]] = {}
    if not acc.empty and metric in acc:
        acc["value"] = axis_values(acc, ax)
        acc["causality"] = causality_labels(acc)
        trained = {m: set(g) for m, g in acc.groupby("model")["causality"]}
        g = acc.groupby(["model", "causality", "value"], sort=True, dropna=False)[metric]
        a = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "seeds": g.count()}).reset_index()
        a["series"] = a["model"] + " (" + a["causality"] + ")"
    n = None
    e = pd.DataFrame()
    if not eff.empty:
        lens = set(eff["seq_len"].astype(int))
        acc_lens = set(acc["seq_len"].astype(int)) if not acc.empty else set()
        n = max(lens & acc_lens) if lens & acc_lens else max(lens)
        e = with_latency_ci(eff[eff["seq_len"] == n].copy())
        e["value"] = axis_values(e, ax)
        e["causality"] = causality_labels(e)
        known = [c not in trained.get(m, {c}) and "causality not recorded" not in trained.get(m, set()) for m, c in zip(e["model"], e["causality"])]
        e = with_accounting(e[~np.asarray(known, dtype=bool)])
        e["series"] = e["model"] + " (" + e["causality"] + ")"
        keep = ["model", "causality", "series", "value", "seq_len", "batch", "latency_ms_p50", "latency_ms_p20", "latency_ms_p80",
                "latency_ms_ci_lo", "latency_ms_ci_hi", "n_samples", "n_repeats", "peak_mem_mb", "params", "memory_params",
                "compute_params", "flops", "flops_method", "flops_analytic", "config_hash"]  # fmt: skip
        extra = [c for c in ("padding", "cpu_threads", "latency_samples_ms", "device", "device_name", "dtype", "level", "d_model",
                             "heads", "layers", "torch", "git_sha", "created_at", "causal") if c in e]  # fmt: skip
        e = e[keep + extra].sort_values(["model", "seq_len"]).drop_duplicates(subset=["model", "causality", "value"], keep="first")
    return a, e, n


def _latency_note(e: pd.DataFrame, n: int | None) -> str:
    """Footnote of a figure with accuracy and latency: which variance each error bar is."""
    from .figure_kit import ci_note

    parts = ["accuracy bars: std over seeds (seed variance)"]
    if not e.empty:
        parts.append(f"latency at N={n}: median of one seed's timing samples")
        parts.append(ci_note(e, "latency bars"))
    return " · ".join(parts)


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
    models = sorted(set(a.get("series", pd.Series(dtype=str))) | set(e.get("series", pd.Series(dtype=str))))
    note_rows = e if not e.empty else df[df["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    pos = _categorical_x(ax, values, ax_def.label)
    ax2 = ax.twinx()
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    for m in models:
        s = a[a["series"] == m] if not a.empty else a
        if not s.empty:
            ax.errorbar([pos[v] for v in s["value"]], s["mean"], yerr=s["std"], marker="o", capsize=3, color=colors[m],
                        label=f"{m}: {metric.upper()} (mean ± std)")  # fmt: skip
        t = e[e["series"] == m] if not e.empty else e
        if not t.empty:
            x = [pos[v] for v in t["value"]]
            ax2.plot(x, t["latency_ms_p50"], ls="--", marker="s", ms=4, color=colors[m], label=f"{m}: latency p50")
            c = t.dropna(subset=["latency_ms_ci_lo", "latency_ms_ci_hi"])
            if not c.empty:
                ax2.errorbar([pos[v] for v in c["value"]], c["latency_ms_p50"], capsize=2, ls="none", color=colors[m], lw=0.8,
                             yerr=[(c["latency_ms_p50"] - c["latency_ms_ci_lo"]).clip(lower=0), (c["latency_ms_ci_hi"] - c["latency_ms_p50"]).clip(lower=0)])  # fmt: skip
    for i, (_, r) in enumerate(a_ref.iterrows()):
        ax.axhline(r["mean"], color=f"C{len(models) + i}", lw=1, label=f"{r['series']} (no {ax_def.name}): {metric.upper()}")
    for i, (_, r) in enumerate(e_ref.iterrows()):
        ax2.axhline(r["latency_ms_p50"], color=f"C{len(models) + i}", lw=1, ls="--", label=f"{r['series']} (no {ax_def.name}): latency p50")
    ax.set_ylabel(f"test {metric.upper()} (mean ± std over seeds)")
    ax2.set_ylabel(f"inference latency p50 (ms, N={n})" if n else "inference latency p50 (ms)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    ax.set_title(f"Ablation: {ax_def.label}")
    subset = _subset(pd.concat([a, a_ref]), pd.concat([e, e_ref]))
    written += save_figure(fig, subset, out, f"ablation-{ax_def.name}", _note(note_rows, _latency_note(pd.concat([e, e_ref]), n)))
    if not e.empty and e["params"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 4.8))
        pos = _categorical_x(ax, values, ax_def.label)
        ax2 = ax.twinx()
        methods = set()
        for m in models:
            t = e[e["series"] == m]
            if t.empty:
                continue
            x = [pos[v] for v in t["value"]]
            ax.plot(x, t["params"] / 1e6, marker="o", color=colors[m], label=f"{m}: parameters (total)")
            if t["memory_params"].gt(0).any():
                ax.plot(x, t["memory_params"] / 1e6, marker="^", ls=":", color=colors[m], label=f"{m}: of which memory bank")
            method = t["flops_method"].iloc[0]
            methods |= set(t["flops_method"].astype(str))
            partial = any(flops_is_partial(v) for v in t["flops_method"])
            ax2.plot(x, t["flops"] / t["batch"] / 1e6, marker="s", ls="--", color=colors[m],
                     label=f"{m}: FLOPs/seq, {'≥ ' if partial else ''}{flops_label(method)}")  # fmt: skip
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
        fl = "FLOPs methods: " + "; ".join(f"{m or 'none'} = {flops_label(m)}" for m in sorted(methods))
        written += save_figure(fig, e.reset_index(drop=True), out, f"ablation-{ax_def.name}-capacity",
                         _note(note_rows, "memory bank = M·d + √M·d (values + sub-keys) · " + fl))  # fmt: skip
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
            xerr = None
            if col == "latency_ms_p50" and r["latency_ms_ci_lo"] == r["latency_ms_ci_lo"] and r["latency_ms_ci_hi"] == r["latency_ms_ci_hi"]:
                xerr = [[max(0.0, r[col] - r["latency_ms_ci_lo"])], [max(0.0, r["latency_ms_ci_hi"] - r[col])]]
            ax.errorbar(r[col], r[f"{metric}_mean"], yerr=r[f"{metric}_std"], xerr=xerr, marker="o" if r["on_front"] else "x",
                        color=f"C{i % 10}", capsize=3, ls="none", label=f"{r['label']} ({r['causality']})")  # fmt: skip
        front = pts[pts["on_front"]].sort_values(col)
        ax.step(front[col], front[f"{metric}_mean"], where="post", color="0.3", lw=1, ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric.upper()} (mean ± std over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        lens = sorted(set(pts["eff_seq_len"].dropna().astype(int)))
        ax.set_title(f"Accuracy–{name} Pareto front")
        eff_used = _rows(df, "efficiency")
        eff_used = eff_used[eff_used["config_hash"].isin(_used_hashes(df, pts))] if not eff_used.empty else eff_used
        extra = f"efficiency at N={','.join(map(str, lens))}, pass infer · y bars: std over seeds (seed variance) · "
        extra += _pareto_x_note(pts, name)
        written += save_figure(fig, pts.reset_index(drop=True), out, f"pareto-{name}", _note(eff_used if not eff_used.empty else df[df["status"] == "ok"], extra))
    return written


def _used_hashes(df: pd.DataFrame, pts: pd.DataFrame) -> set[str]:
    """config_hash of the efficiency rows a joined table used (matched on model, causality, length, batch)."""
    eff = _rows(df, "efficiency")
    if eff.empty:
        return set()
    eff = eff.assign(causality=causality_labels(eff))
    used = set()
    for _, r in pts.iterrows():
        m = eff[(eff["model"] == r["model"]) & (eff["options"].astype(str) == str(r["options"])) & (eff["seq_len"] == r["eff_seq_len"])
                & (eff["batch"] == r["eff_batch"]) & (eff["pass"] == "infer")]  # fmt: skip
        if r["causality"] != "causality not recorded":
            m = m[m["causality"] == r["causality"]]
        used |= set(m["config_hash"])
    return used


def _pareto_x_note(pts: pd.DataFrame, name: str) -> str:
    if name != "latency":
        return "x: peak memory of one inference pass"
    if pts["latency_ms_ci_lo"].notna().any():
        return "x bars: 95 % bootstrap CI of the median latency (timing jitter of one seed)"
    return "x: median latency of one seed's timing samples (CI unavailable: no raw timing samples)"


# ----------------------------------------------------------------------------- claim check


def claim_check_data(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric claim check: per ELASTIC infer row, speed-up and peak-memory reduction vs eager softmax
    (``*_vs_softmax``), vs the fastest exact backend (``speedup_vs_exact``, ``exact_fast_model``) and
    vs the lowest-memory exact backend (``mem_reduction_vs_exact``, ``exact_small_model``), each
    measured alike (same :data:`MATCH_KEYS`, so the same causality), with bootstrap CIs of the
    speed-ups (``*_ci_lo/hi``, NaN without raw timing samples).  ``flash_model``,
    ``speedup_vs_flash``, ``mem_reduction_vs_flash``: the fastest flash-class backend (``sdpa*``
    but ``sdpa-math``, ``flash-attn``, ``xformers``); ``evidence``: CPU rows are not evidence for
    the GPU claim."""
    from .compare import is_flash_class

    eff = _rows(df, "efficiency")
    if eff.empty:
        return pd.DataFrame()
    eff = eff[eff["pass"] == "infer"]
    keys = [k for k in MATCH_KEYS if k in eff]
    eff = eff.assign(_key=eff[keys].astype(str).agg("|".join, axis=1))
    eff["label"] = config_labels(eff) if not eff.empty else []
    eff["causality"] = causality_labels(eff)
    rows = []
    for _, e in eff[eff["model"].map(is_elastic)].iterrows():
        same = eff[eff["_key"] == e["_key"]]
        row = {"model": e["label"], "causality": e["causality"], "level": e["level"], "device": e["device"], "device_name": e["device_name"],
               "dtype": e["dtype"], "seq_len": int(e["seq_len"]), "batch": int(e["batch"]), "latency_ms_p50": e["latency_ms_p50"],
               "peak_mem_mb": e["peak_mem_mb"], "config_hash": e["config_hash"],
               "evidence": CPU_NOTE if str(e["device"]).startswith("cpu") else "GPU row"}  # fmt: skip
        exact = same[same["model"].map(is_exact)]
        picks = (
            ("softmax", same[same["model"] == "softmax"], "latency_ms_p50"),
            ("flash", same[same["model"].map(is_flash_class)], "latency_ms_p50"),
            ("exact_fast", exact, "latency_ms_p50"),
            ("exact_small", exact, "peak_mem_mb"),
        )
        for ref, cand, by in picks:
            cand = cand.dropna(subset=[by])
            name = {"exact_fast": "speedup_vs_exact", "exact_small": None}.get(ref, f"speedup_vs_{ref}")
            mem = {"exact_fast": None, "exact_small": "mem_reduction_vs_exact"}.get(ref, f"mem_reduction_vs_{ref}")
            row[f"{ref}_model"] = ""
            for c in (name, mem):
                if c:
                    row[c] = np.nan
            if name:
                row[f"{name}_ci_lo"] = row[f"{name}_ci_hi"] = np.nan
            if cand.empty:
                continue
            b = cand.sort_values(by).iloc[0]
            row[f"{ref}_model"] = b["model"]
            if name:
                _, lo, hi, _ = rows_ratio_ci(b, e)  # paired when the rows were timed together
                row.update({name: b["latency_ms_p50"] / e["latency_ms_p50"], f"{name}_ci_lo": lo, f"{name}_ci_hi": hi})
            if mem:
                row[mem] = 1 - e["peak_mem_mb"] / b["peak_mem_mb"]
        rows.append(row)
    return pd.DataFrame(rows)


def plot_claim_check(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``claim-check`` (one figure per level/device/dtype when several)."""
    cc = claim_check_data(df)
    written: list[Path] = []
    if cc.empty or (cc["speedup_vs_softmax"].isna().all() and cc["speedup_vs_exact"].isna().all()):
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = list(cc.groupby(["level", "device_name", "dtype"], sort=True))
    for (level, dev, dtype), sub in groups:
        suffix = "" if len(groups) == 1 else f"-{level}-{dtype}-{str(dev).replace(' ', '_')[:20]}"
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.0))
        for i, (series, s) in enumerate(sub.sort_values("seq_len").groupby(["model", "causality"], sort=True)):
            label = f"{series[0]} ({series[1]})"
            for ax, col, mem_ref in ((axes[0], "mem_reduction_vs_softmax", "softmax"), (axes[0], "mem_reduction_vs_exact", "exact_small"),
                                     (axes[1], "speedup_vs_softmax", "softmax"), (axes[1], "speedup_vs_exact", "exact_fast")):  # fmt: skip
                if not s[col].notna().any():
                    continue
                who = "softmax" if mem_ref == "softmax" else (
                    ("lowest-memory" if mem_ref == "exact_small" else "fastest") + " exact (" + ",".join(sorted(set(s[f"{mem_ref}_model"]) - {""})) + ")"
                )  # fmt: skip
                y = 100 * s[col] if col.startswith("mem") else s[col]
                ls = "-" if mem_ref == "softmax" else "--"
                ax.plot(s["seq_len"], y, marker="o", ms=3, ls=ls, color=f"C{i}", label=f"{label} vs {who}")
                if not col.startswith("mem") and s[f"{col}_ci_lo"].notna().any():
                    c = s.dropna(subset=[f"{col}_ci_lo", f"{col}_ci_hi"])
                    ax.errorbar(c["seq_len"], c[col], yerr=[(c[col] - c[f"{col}_ci_lo"]).clip(lower=0), (c[f"{col}_ci_hi"] - c[col]).clip(lower=0)],
                                ls="none", color=f"C{i}", capsize=2, lw=0.8)  # fmt: skip
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
            log2_x(a)
            a.legend(fontsize=6)
        cpu = (sub["evidence"] == CPU_NOTE).all()
        title = "Claim check: ELASTIC vs eager softmax (solid) and the best exact backend measured alike (dashed)"
        fig.suptitle(title + (f"\n{CPU_NOTE}" if cpu else ""), fontsize=10, color="black")
        rows = df[(df["task"] == "efficiency") & (df["status"] == "ok") & (df["pass"] == "infer")]
        rows = rows[rows["dtype"] == dtype]
        from .figure_kit import ci_note

        extra = "comparisons only between rows of the same causality and match keys · " + ci_note(rows, "speed-up bars (ratio of medians)")
        alone = sorted({f"{m} ({c})" for (m, c), g in sub.groupby(["model", "causality"]) if g[["speedup_vs_softmax", "speedup_vs_exact"]].isna().all().all()})
        if alone:
            extra += " · no exact backend measured alike (not drawn): " + ", ".join(alone)
        if cpu:
            extra += f" · {CPU_NOTE}"
        written += save_figure(fig, sub.reset_index(drop=True), out, f"claim-check{suffix}", _note(rows, extra) if not rows.empty else extra)
    return written
