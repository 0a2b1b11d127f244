"""Figures of accuracy runs (``task=accuracy`` rows), regenerated from the CSV alone.

- ``accuracy-<metric>``        each model's test metric, mean ± std over seeds (bars)
- ``accuracy-vs-len-<metric>`` the metric against the max sequence length, mean ± std (lines)

Rows are grouped by model, swept options and causality (every label names it: ``elastic
(non-causal)``); only ``status == "ok"`` rows are drawn.  Error bars are the standard deviation
over seeds (seed variance: no timing here); the footnote names the dataset, device, training
batch, causality, CPU threads and the number of seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..store import load_results  # noqa: E402
from .compare import _keep, _parse_options  # noqa: E402
from .figure_kit import log2_x, save_figure  # noqa: E402

METRICS = ("ndcg@10", "hr@10")


def accuracy_rows(paths: Iterable[str | Path] | pd.DataFrame) -> pd.DataFrame:
    df = paths if isinstance(paths, pd.DataFrame) else load_results(list(paths))
    df = df[(df.get("task") == "accuracy") & (df["status"] == "ok")].copy()
    if df.empty:
        return df
    opts = df["options"].fillna("").astype(str)
    parsed = [_parse_options(o) for o in opts]
    keys = set().union(*parsed) if parsed else set()
    # name a series by the options whose value differs between the rows that have them
    varying = {k for k in keys if len({p[k] for p in parsed if k in p}) > 1}
    kept = [_keep(o, varying) for o in opts]
    from .paper_figures import causality_labels

    df["series"] = [f"{m} [{o}]" if o else m for m, o in zip(df["model"].astype(str), kept)]
    df["causality"] = causality_labels(df)
    return df


def _labelled(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` plus ``label`` = ``series (causality)``, what the figures show."""
    return summary.assign(label=summary["series"] + " (" + summary["causality"] + ")")


def seed_summary(df: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of ``metric`` per group."""
    g = df.groupby(by, sort=True)[metric]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "seeds": g.count()}).reset_index()


def _note(df: pd.DataFrame, metric: str) -> str:
    first = df.iloc[0]
    dates = sorted(str(d)[:10] for d in df["created_at"] if str(d))
    return " · ".join(
        str(p)
        for p in (
            f"dataset {', '.join(sorted(df['dataset'].astype(str).unique()))}",
            f"{first.get('device_name') or first.get('device')}",
            f"test {metric} (full ranking unless the dataset label says otherwise)",
            f"d={first.get('d_model')} L={first.get('layers')}",
            dates[-1] if dates else "",
            f"train batch {_span(df['batch'])}" if "batch" in df and df["batch"].notna().any() else "",
            f"CPU threads {_span(df['cpu_threads'])}" if "cpu_threads" in df and df["cpu_threads"].notna().any() else "",
            "causality per label",
            f"n = {_span(df.groupby('series')['seed'].nunique())} seed(s) per bar; error bars: std over seeds (seed variance)",
        )
        if p
    )


def _span(values: pd.Series) -> str:
    v = sorted({int(x) for x in pd.to_numeric(values, errors="coerce").dropna()})
    return "?" if not v else (str(v[0]) if len(v) == 1 else f"{v[0]}–{v[-1]}")


def plot_accuracy(paths: Iterable[str | Path] | pd.DataFrame, out_dir: str | Path) -> list[Path]:
    df = accuracy_rows(paths)
    written: list[Path] = []
    if df.empty:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for metric in METRICS:
        if metric not in df or df[metric].isna().all():
            continue
        per_model = _labelled(seed_summary(df, metric, ["series", "causality"]))
        fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(per_model) + 2), 3.8))
        ax.bar(per_model["label"], per_model["mean"], yerr=per_model["std"], capsize=4, color="tab:blue", alpha=0.8)
        for x, (m, s, n) in enumerate(zip(per_model["mean"], per_model["std"], per_model["seeds"])):
            ax.annotate(f"{m:.4f}\n±{s:.4f} (n={n})", (x, m + s), ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, float((per_model["mean"] + per_model["std"]).max()) * 1.25)  # room for the annotations
        ax.set_ylabel(f"test {metric.upper()}\n(mean ± std over seeds)")
        ax.set_title(f"accuracy per model: {metric.upper()}")
        ax.tick_params(axis="x", rotation=20)
        written += save_figure(fig, per_model, out, f"accuracy-{metric.replace('@', '')}", _note(df, metric))
        if df["seq_len"].nunique() > 1:
            per_len = _labelled(seed_summary(df, metric, ["series", "causality", "seq_len"]))
            fig, ax = plt.subplots(figsize=(8, 4))
            for label, s in per_len.groupby("label", sort=True):
                ax.errorbar(s["seq_len"], s["mean"], yerr=s["std"], marker="o", ms=3, capsize=3, label=label)
            log2_x(ax)
            ax.set_xlabel("max sequence length (items, log₂)")
            ax.set_ylabel(f"test {metric.upper()} (mean ± std)")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            ax.set_title(f"accuracy vs max length: {metric.upper()}")
            written += save_figure(fig, per_len, out, f"accuracy-vs-len-{metric.replace('@', '')}", _note(df, metric))
    return written
