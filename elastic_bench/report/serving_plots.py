"""The serving figures (issue 13), regenerated from the results CSV alone.

For every (level, device, dtype) group with ``serve`` / ``serve_step`` rows (status ok):

- ``serve-step-latency``  ``serve_step`` latency p50 (p20–p80 band, p99 dotted) vs the history
                          length: flat lines for the stateful mechanisms (running state), rising
                          ones for the KV caches and the recompute paths;
- ``serve-latency``       ``serve`` latency p50 (band p20–p80) vs N, at batch 1 (the smallest
                          batch measured when there is no batch-1 row);
- ``serve-state-bytes``   cached state per user (bytes, ``state_bytes_per_user``) vs N.

Series are ``model (causality)`` plus the path of the step (``kv-cache``, ``running-state``,
``recompute``), from ``backend_detail``.  Each figure is PNG + PDF + the CSV subset beside it, with
the footnote of :func:`.figure_kit.footnote`.  No serving rows: no figure (:func:`plot_serving` returns
``[]``; the caller says so).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .compare import series_labels
from .figure_kit import draw_lines, figure_groups, footnote, log2_x, plt, save_figure

SERVING = ("serve", "serve_step")


def step_path(detail: object) -> str:
    """``kv-cache`` | ``running-state`` | ``recompute`` (from a ``serve_step`` row's ``backend_detail``)."""
    d = str(detail)
    for kind in ("kv-cache", "running-state", "recompute"):
        if d.startswith(kind):
            return kind
    return "other"


def serving_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ok ``serve`` / ``serve_step`` rows, with ``series`` labels (the step's path added)."""
    if df.empty or "pass" not in df:
        return df.iloc[0:0]
    rows = df[(df["pass"].isin(SERVING)) & (df["status"] == "ok")].copy()
    return _labelled(rows)


def _labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with their ``series`` labels, computed on these rows only (labels name what
    differs between the rows they are given: label after choosing the batch, or a batch that
    is not drawn splits a line)."""
    if rows.empty:
        return rows
    rows = rows.copy()
    rows["series"] = series_labels(rows)
    step = rows["pass"] == "serve_step"
    rows.loc[step, "series"] = rows.loc[step, "series"] + " " + rows.loc[step, "backend_detail"].map(step_path)
    return rows


def _smallest_batch(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return rows
    b = 1 if (rows["batch"] == 1).any() else rows["batch"].min()
    return _labelled(rows[rows["batch"] == b])


def plot_serving(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write the serving figures of ``df`` (any results rows) to ``out_dir``; returns the files."""
    rows = serving_rows(df)
    written: list[Path] = []
    if rows.empty:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, sub in figure_groups(rows):
        step = _smallest_batch(sub[sub["pass"] == "serve_step"])
        serve = _smallest_batch(sub[sub["pass"] == "serve"])
        if not step.empty:
            fig, ax = plt.subplots(figsize=(7, 4.8))
            draw_lines(ax, step, "latency_ms_p50", ("latency_ms_p20", "latency_ms_p80"))
            if "latency_ms_p99" in step and step["latency_ms_p99"].notna().any():
                for _, s in step.sort_values("seq_len").groupby("series"):
                    ax.plot(s["seq_len"], s["latency_ms_p99"], ls=":", lw=0.8, color="0.5")
            log2_x(ax)
            ax.set_xlabel("history length N (items, log₂)")
            ax.set_yscale("log")
            ax.set_ylabel("one step, p50 (ms, log)")
            ax.set_title(f"serve_step: one appended interaction — batch {int(step['batch'].iloc[0])} (band p20–p80, dotted p99)", fontsize=10)
            ax.legend(fontsize=7)
            written += save_figure(fig, step, out, f"serve-step-latency{suffix}", footnote(step, None) + " · state built untimed; every step from the same state")
            if "state_bytes_per_user" in step and step["state_bytes_per_user"].notna().any():
                fig, ax = plt.subplots(figsize=(7, 4.8))
                draw_lines(ax, step, "state_bytes_per_user")
                log2_x(ax)
                ax.set_xlabel("history length N (items, log₂)")
                ax.set_yscale("log", base=2)
                ax.set_ylabel("cached state per user (bytes, log₂)")
                ax.set_title("Per-user serving state vs history length")
                ax.legend(fontsize=7)
                note = footnote(step, None) + " · bytes of the per-user state tensors at their used length (recompute: the int64 item history)"
                written += save_figure(fig, step, out, f"serve-state-bytes{suffix}", note)
        if not serve.empty:
            fig, ax = plt.subplots(figsize=(7, 4.8))
            draw_lines(ax, serve, "latency_ms_p50", ("latency_ms_p20", "latency_ms_p80"))
            log2_x(ax)
            ax.set_yscale("log")
            ax.set_ylabel("latency p50 (ms, log; band p20–p80)")
            ax.set_title(f"serve: last position, last layer's one query — batch {int(serve['batch'].iloc[0])}")
            ax.legend(fontsize=7)
            written += save_figure(fig, serve, out, f"serve-latency{suffix}", footnote(serve, None))
    return written
