"""Figures of an efficiency sweep, regenerated from the results CSV alone.

For every (level, device, dtype) and every pass present:

- ``latency-<pass>``        latency p50 (ms) vs sequence length, p20–p80 band, error bars =
                            95 % bootstrap CI of the median where raw samples exist, log-log
- ``speedup-<pass>``        speed-up vs the baseline (× baseline latency / latency), error
                            bars = 95 % bootstrap CI of the ratio of medians where raw samples exist
- ``memory-<pass>``         peak and activation memory (MB) vs sequence length
- ``mem-reduction-<pass>``  peak and activation memory reduction vs the baseline (%)

plus, where the CSV has ``serve`` / ``serve_step`` rows, the serving figures of
:mod:`.serving_plots` (step latency and state bytes vs history length, serve latency at B = 1).

Every series label names its causality (``linear (causal)``, ``elastic (non-causal)``) and
ratios only pair rows of the same causality (:mod:`.compare`).  The ``no-mixing`` backend (no
token mixing: the floor no attention can beat) is drawn as a black dashed line labelled
``floor``; dotted lines are ``obj=last`` training rows, square markers non-causal rows.

Each figure is written as PNG and PDF, with the exact CSV subset it was drawn from beside
it (``<name>.csv``, derived columns included); the x axis is log₂ sequence length, axes
carry units and a two-line footnote (:func:`.figure_kit.footnote`) gives device, dtype, level, model
shape, torch, code, date and baseline, then batch or tokens per batch, padding, causality,
CPU threads, the number of timing samples and repeats, and what the error bars are.  Only
``status == "ok"`` rows are drawn, and speed-ups only come from :mod:`.compare` (matched
rows, both ok), so an ``incorrect`` backend never gets one.

Example::

    >>> plot_results(["results/sweep-cpu.csv"], baseline="softmax", out_dir="reports/sweep-cpu")
    [PosixPath('reports/sweep-cpu/latency-infer.png'), ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
from matplotlib.ticker import FuncFormatter

from .figure_kit import (
    PASS_ORDER,
    ci_note,
    draw_lines,
    efficiency_rows,
    figure_groups,
    footnote,
    log2_x,
    plt,
    save_figure,
)
from .serving_plots import plot_serving


def plot_group(sub: pd.DataFrame, suffix: str, baseline: str, out_dir: Path) -> list[Path]:
    """The four figures of each pass of one (level, device, dtype) group."""
    written: list[Path] = []
    ok = sub[sub["status"] == "ok"]
    passes = [p for p in PASS_ORDER if p in set(ok["pass"])] + sorted(set(ok["pass"]) - set(PASS_ORDER))
    for p in passes:
        rows = ok[ok["pass"] == p]
        note = footnote(rows, None)
        # latency
        fig, ax = plt.subplots(figsize=(7, 4.8))
        draw_lines(ax, rows, "latency_ms_p50", ("latency_ms_p20", "latency_ms_p80"), ci=("latency_ms_ci_lo", "latency_ms_ci_hi"))
        log2_x(ax)
        ax.set_yscale("log")
        ax.set_ylabel("latency p50 (ms, log; band p20–p80)")
        ax.set_title(f"Latency vs sequence length — {p}")
        ax.legend(fontsize=7)
        written += save_figure(fig, rows, out_dir, f"latency-{p}{suffix}", note + " · " + ci_note(rows, "bars on the median"))
        # speed-up
        rel = rows[rows["speedup"].notna() & (rows["model"] != baseline)]
        if not rel.empty:
            fig, ax = plt.subplots(figsize=(7, 4.8))
            draw_lines(ax, rel, "speedup", ci=("speedup_ci_lo", "speedup_ci_hi"))
            ax.axhline(1.0, color="0.3", lw=1, ls="--")
            log2_x(ax)
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"×{v:g}"))
            ax.set_ylabel(f"speed-up vs {baseline} (×, log₂)")
            ax.set_title(f"Speed-up vs {baseline} — {p}")
            ax.legend(fontsize=7)
            bars = ci_note(rel, "bars on the ratio of medians")
            written += save_figure(fig, rel, out_dir, f"speedup-{p}{suffix}", footnote(rel, baseline) + " · " + bars)
        # memory
        if rows["peak_mem_mb"].notna().any():
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
            for ax, col, title in ((axes[0], "peak_mem_mb", "peak memory"), (axes[1], "act_mem_mb", "activation memory (peak − base)")):
                draw_lines(ax, rows, col)
                log2_x(ax)
                ax.set_yscale("log")
                ax.set_ylabel(f"{title} (MB, log)")
                ax.set_title(f"{title.capitalize()} — {p}", fontsize=10)
            axes[0].legend(fontsize=7)
            mm = rows["mem_method"].iloc[0] if "mem_method" in rows else ""
            written += save_figure(fig, rows, out_dir, f"memory-{p}{suffix}", note + f" · memory: {mm}")
        # memory reduction
        red = rows[rows["peak_mem_reduction"].notna() & (rows["model"] != baseline)]
        if not red.empty:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
            for ax, col, title in ((axes[0], "peak_mem_reduction", "peak memory"), (axes[1], "act_mem_reduction", "activation memory")):
                draw_lines(ax, red, col, scale=100.0)
                ax.axhline(0.0, color="0.3", lw=1, ls="--")
                log2_x(ax)
                ax.set_ylabel(f"{title} reduction vs {baseline} (%)")
                ax.set_title(f"{title.capitalize()} reduction — {p}", fontsize=10)
            axes[0].legend(fontsize=7)
            written += save_figure(fig, red, out_dir, f"mem-reduction-{p}{suffix}", footnote(red, baseline))
    return written


def plot_results(paths: Iterable[str | Path] | pd.DataFrame, baseline: str = "softmax", out_dir: str | Path = "reports/plots") -> list[Path]:
    """Write every figure of the results in ``paths`` to ``out_dir``; returns the files written."""
    df = efficiency_rows(paths, baseline)  # raises on a missing or foreign file before anything is created
    written: list[Path] = []
    if df.empty:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, sub in figure_groups(df):
        written += plot_group(sub, suffix, baseline, out)
    written += plot_serving(df, out)  # serve / serve_step rows: their own three figures
    return written
