"""What every figure of a sweep shares: matplotlib set up headless, the rows a figure may
draw (:func:`efficiency_rows`), one figure per (level, device, dtype) (:func:`figure_groups`),
the log₂ sequence-length axis, the two-line footnote (:func:`footnote`: device, dtype, level,
shape, torch, code, date, baseline; tokens per batch, padding, causality, CPU threads,
samples and repeats), the error-bar note, and :func:`save_figure` (PNG + PDF + the CSV subset the
figure was drawn from).  :mod:`.plots` and :mod:`.serving_plots` draw with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ..grammar import human_int  # noqa: E402
from ..store import load_results  # noqa: E402
from .compare import causal_value, has_samples, is_floor, series_labels, with_baseline  # noqa: E402

PASS_ORDER = ("infer", "fwd", "fwd_bwd", "train_step", "serve", "serve_step")
GROUP_KEYS = ("level", "device", "device_name", "dtype")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()[:40]


def efficiency_rows(paths: Iterable[str | Path] | pd.DataFrame, baseline: str) -> pd.DataFrame:
    """All efficiency rows with ``series`` labels and the derived comparison columns."""
    df = paths if isinstance(paths, pd.DataFrame) else load_results(list(paths))
    if "task" in df:
        df = df[df["task"].isin(["efficiency", ""])]
    df = with_baseline(df, baseline)
    df["series"] = series_labels(df) if len(df) else []
    return df


def figure_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(name suffix, rows) per (level, device, dtype); the suffix only names what varies."""
    keys = [k for k in GROUP_KEYS if k in df]
    varying = [k for k in keys if df[k].nunique() > 1]
    groups = []
    for values, sub in df.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        named = dict(zip(keys, values))
        suffix = "".join(f"-{slug(named[k])}" for k in varying)
        groups.append((suffix, sub))
    return groups


def column_values(sub: pd.DataFrame, col: str) -> list[str]:
    if col not in sub:
        return []
    return sorted({str(v) for v in sub[col] if str(v) not in ("", "nan", "None")})


def span_text(values: pd.Series, fmt=human_int) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return ""
    lo, hi = int(v.min()), int(v.max())
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def batch_text(sub: pd.DataFrame) -> str:
    """``batch 16`` when one batch, ``tokens/batch 64k (batch 256–32)`` when batch × N is constant."""
    if "batch" not in sub or sub["batch"].isna().all():
        return ""
    b = pd.to_numeric(sub["batch"], errors="coerce")
    if b.nunique() <= 1:
        return f"batch {span_text(b)}"
    tokens = b * pd.to_numeric(sub["seq_len"], errors="coerce")
    return f"tokens/batch {span_text(tokens)} (batch {span_text(b)})"


def causality_note(sub: pd.DataFrame) -> str:
    kinds = {causal_value(v) for v, m in zip(sub.get("causal", []), sub.get("model", [])) if not is_floor(m)}
    names = [n for c, n in ((True, "causal"), (False, "non-causal"), (None, "not recorded")) if c in kinds]
    return "causality " + (" & ".join(names) + (" (per label)" if len(names) > 1 else "") if names else "–")


def samples_note(sub: pd.DataFrame) -> str:
    """``n = 10–50 timing samples × 2 repeats`` (the timer's samples per cell)."""
    n = span_text(sub["n_samples"]) if "n_samples" in sub else ""
    if not n:
        return "n samples not recorded"
    reps = span_text(sub["n_repeats"]) if "n_repeats" in sub and sub["n_repeats"].notna().any() else "1"
    return f"n = {n} timing samples in {reps} repeat process(es)"


def footnote(sub: pd.DataFrame, baseline: str | None) -> str:
    """Two lines: where and what (device, dtype, level, shape, torch, code, date, baseline), then how
    (batch or tokens per batch, padding, causality, CPU threads, timing samples and repeats)."""
    dates = sorted(d[:10] for d in sub["created_at"].astype(str) if d)
    date = dates[0] if dates and dates[0] == dates[-1] else (f"{dates[0]} – {dates[-1]}" if dates else "")
    first = sub.iloc[0]
    shas = column_values(sub, "git_sha")
    parts = [
        f"{first.get('device_name') or first.get('device')} ({first.get('device')})",
        f"dtype {first.get('dtype')}",
        f"level {first.get('level')}",
        f"d={int_text(first.get('d_model'))} h={int_text(first.get('heads'))} L={int_text(first.get('layers'))}",
        f"torch {', '.join(column_values(sub, 'torch'))}" if column_values(sub, "torch") else "",
        f"code {', '.join(shas)}" if shas else "",
        date,
    ]
    if baseline:
        parts.append(f"baseline {baseline} (same causality)")
    threads = span_text(sub["cpu_threads"]) if "cpu_threads" in sub and str(first.get("device")) == "cpu" else ""
    how = [
        batch_text(sub),
        f"padding {', '.join(column_values(sub, 'padding')) or 'not recorded'}",
        causality_note(sub),
        f"{threads} CPU thread(s)" if threads else ("CPU threads not recorded" if str(first.get("device")) == "cpu" else ""),
        samples_note(sub),
    ]
    return " · ".join(str(p) for p in parts if p) + "\n" + " · ".join(p for p in how if p)


def int_text(v: object) -> str:
    try:
        return str(int(float(v)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)


def log2_x(ax: plt.Axes) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_int(int(round(x))) if x >= 1 else f"{x:g}"))
    ax.set_xlabel("sequence length N (tokens, log₂)")
    ax.grid(True, which="both", alpha=0.3)


def wrap_note(note: str, width: int) -> str:
    """``note`` with each line broken at `` · `` so that no line is longer than ``width`` characters."""
    out = []
    for line in note.split("\n"):
        cur = ""
        for part in line.split(" · "):
            if cur and len(cur) + 3 + len(part) > width:
                out.append(cur)
                cur = part
            else:
                cur = f"{cur} · {part}" if cur else part
        out.append(cur)
    return "\n".join(out)


def save_figure(fig: plt.Figure, rows: pd.DataFrame, out_dir: Path, name: str, note: str) -> list[Path]:
    note = wrap_note(note, int(fig.get_figwidth() * 17.5))
    fig.text(0.01, 0.005, note, fontsize=6.5, color="0.35", ha="left", va="bottom")
    lines = note.count("\n") + 1
    fig.tight_layout(rect=(0, min(0.25, 0.032 * lines * 4.5 / fig.get_figheight()), 1, 1))
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf", out_dir / f"{name}.csv"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # no timestamp: a rebuild from the same CSV gives the same bytes
    plt.close(fig)
    rows.to_csv(paths[2], index=False)
    return paths


def draw_lines(
    ax: plt.Axes, rows: pd.DataFrame, y: str, band: tuple[str, str] | None = None, scale: float = 1.0, ci: tuple[str, str] | None = None
) -> bool:
    """One line per series; the ``no-mixing`` floor black and dashed; ``ci`` columns as error bars."""
    drawn = False
    groups = list(rows.sort_values("seq_len").groupby("series", sort=True))
    # more series than the default cycle's 10 colours: tab20, so no two lines share a colour
    colours = plt.get_cmap("tab20").colors if len(groups) > 10 else [None] * len(groups)
    for (label, s), colour in zip(groups, colours):
        s = s.dropna(subset=[y])
        if s.empty:
            continue
        floor = s["model"].map(is_floor).all()
        noncausal = all(causal_value(v) is False for v in s.get("causal", []))
        style = "--" if floor else (":" if "obj=last" in str(label) else "-")
        kw = dict(color="black", lw=1.6, marker=None) if floor else dict(marker="s" if noncausal else "o", ms=3, color=colour)
        (line,) = ax.plot(s["seq_len"], s[y] * scale, ls=style, label=label, **kw)
        if band and s[band[0]].notna().all():
            ax.fill_between(s["seq_len"], s[band[0]] * scale, s[band[1]] * scale, color=line.get_color(), alpha=0.15)
        if ci and ci[0] in s and s[ci[0]].notna().any():
            c = s.dropna(subset=[ci[0], ci[1]])
            yv = c[y] * scale
            err = [(yv - c[ci[0]] * scale).clip(lower=0), (c[ci[1]] * scale - yv).clip(lower=0)]
            ax.errorbar(c["seq_len"], yv, yerr=err, ls="none", color=line.get_color(), capsize=2, lw=0.8)
        drawn = True
    return drawn


def ci_note(rows: pd.DataFrame, what: str) -> str:
    """What the error bars are, or that they are unavailable (no raw timing samples)."""
    n, k = int(has_samples(rows).sum()), len(rows)
    if n == 0:
        return f"{what}: CI unavailable (no raw timing samples in the CSV)"
    part = "" if n == k else f" ({n} of {k} rows; the rest have no raw samples)"
    return f"{what}: 95 % bootstrap CI (timing jitter of one seed, cluster bootstrap over repeats){part}"


def default_report_dir(csv_path: str | Path) -> Path:
    """``results/x.csv`` -> ``reports/x`` (beside ``results/``'s parent)."""
    return Path("reports") / Path(csv_path).stem
