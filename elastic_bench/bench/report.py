"""A Markdown report of one or more results CSVs: tables, figures and the claim check.

``reports/<name>/report.md`` holds, per (level, device, dtype) and pass, the latency,
speed-up and memory tables (one row per sequence length, one column per model), the
figures of :mod:`.plots`, the rows that did not run (``oom``, ``skipped``, ``incorrect``,
``error``) with their reasons, and the **claim check**: at each sequence length, ELASTIC's
(every model whose name starts with ``elastic``) inference speed-up and memory reduction
vs ``softmax`` and vs the fastest FlashAttention-class backend that ran on that device
(``sdpa*``, ``flash-attn``, ``xformers``), beside the paper's claims (90 % less memory,
×2.7 faster inference).

Example::

    >>> write_report(["results/sweep-cpu.csv"], out_dir="reports/sweep-cpu")
    PosixPath('reports/sweep-cpu/report.md')
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .compare import MATCH_KEYS, match_key
from .plots import PASS_ORDER, efficiency_rows, figure_groups, plot_results

CLAIM_MEMORY = 0.90  # "up to 90 % less GPU memory"
CLAIM_SPEEDUP = 2.7  # "×2.7 inference speed-up"


def is_elastic(model: str) -> bool:
    return str(model).startswith("elastic")


def is_flash_class(model: str) -> bool:
    m = str(model)
    return m.startswith("sdpa") or m in ("flash-attn", "xformers")


def _fmt(v: object, kind: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if kind == "x":
        return f"×{v:.2f}"
    if kind == "%":
        return f"{100 * float(v):.0f} %"
    if kind == "ms":
        return f"{v:.3g}"
    if kind == "mb":
        return f"{v:,.0f}" if abs(float(v)) >= 100 else f"{v:.3g}"
    return str(v)


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(x) for x in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


def pivot(rows: pd.DataFrame, value: str, kind: str) -> pd.DataFrame:
    if rows.empty or rows[value].notna().sum() == 0:
        return pd.DataFrame()
    t = rows.pivot_table(index="seq_len", columns="series", values=value, aggfunc="first")
    t = t.apply(lambda col: col.map(lambda v: _fmt(v, kind)))
    t.index = [int(i) for i in t.index]
    return t.reset_index().rename(columns={"index": "seq_len"})


def claim_check(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, ELASTIC series, seq_len) from ``infer`` rows (see the module doc)."""
    rows = []
    ok = df[(df["status"] == "ok") & (df["pass"] == "infer")]
    keys = [k for k in MATCH_KEYS if k in df and k != "objective" and k != "loss"]
    train = df[(df["status"] == "ok") & (df["pass"] == "train_step")]
    ok_keys = match_key(ok, keys) if len(ok) else pd.Series(dtype=str)
    for idx, e in ok[ok["model"].map(is_elastic)].sort_values(["level", "dtype", "seq_len"]).iterrows():
        same = ok[ok_keys == ok_keys[idx]]
        soft = same[same["model"] == "softmax"]
        flash = same[same["model"].map(is_flash_class)].sort_values("latency_ms_p50")
        row = {
            "level": e["level"],
            "device": e["device_name"] or e["device"],
            "dtype": e["dtype"],
            "model": e["series"],
            "seq_len": int(e["seq_len"]),
            "batch": int(e["batch"]),
        }
        if not soft.empty:
            s = soft.iloc[0]
            row["speed-up vs softmax"] = _fmt(s["latency_ms_p50"] / e["latency_ms_p50"], "x")
            row["peak mem reduction vs softmax"] = _fmt(1 - e["peak_mem_mb"] / s["peak_mem_mb"], "%")
            row["act mem reduction vs softmax"] = _fmt(1 - e["act_mem_mb"] / s["act_mem_mb"], "%")
        else:
            row["speed-up vs softmax"] = row["peak mem reduction vs softmax"] = row["act mem reduction vs softmax"] = "–"
        # training memory: elastic under 'last', elastic-causal under 'all' (the objective each trains with)
        tr_keys = [k for k in keys if k != "pass"]
        tr_e = train[(match_key(train, tr_keys) == match_key(ok.loc[[idx]], tr_keys).iloc[0]) & (train["model"] == e["model"]) & (train["options"] == e["options"])]
        red = "–"
        if not tr_e.empty:
            obj = "all" if (tr_e["objective"] == "all").any() and str(e["causal"]).lower() == "true" else "last"
            te = tr_e[tr_e["objective"] == obj]
            ts_keys = [k for k in keys if k not in ("pass", "batch")]
            ts = train[(match_key(train, ts_keys) == match_key(ok.loc[[idx]], ts_keys).iloc[0])
                       & (train["model"] == "softmax") & (train["objective"] == obj) & (train["batch"] == (te["batch"].iloc[0] if len(te) else -1))]
            if len(te) and len(ts):
                red = _fmt(1 - te["peak_mem_mb"].iloc[0] / ts["peak_mem_mb"].iloc[0], "%") + f" (obj={obj})"
        row["train_step peak mem reduction vs softmax"] = red
        if not flash.empty:
            f = flash.iloc[0]
            row["best flash-class"] = f["model"]
            row["speed-up vs it"] = _fmt(f["latency_ms_p50"] / e["latency_ms_p50"], "x")
            row["peak mem reduction vs it"] = _fmt(1 - e["peak_mem_mb"] / f["peak_mem_mb"], "%")
        else:
            row["best flash-class"] = "none ran"
            row["speed-up vs it"] = row["peak mem reduction vs it"] = "–"
        sp = soft["latency_ms_p50"].iloc[0] / e["latency_ms_p50"] if not soft.empty else np.nan
        mr = 1 - e["peak_mem_mb"] / soft["peak_mem_mb"].iloc[0] if not soft.empty else np.nan
        row[f"meets claim vs softmax (×{CLAIM_SPEEDUP}, {CLAIM_MEMORY:.0%})"] = (
            "–" if soft.empty else f"speed {'yes' if sp >= CLAIM_SPEEDUP else 'no'}, memory {'yes' if mr >= CLAIM_MEMORY else 'no'}"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def not_run(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    g = bad.groupby(["model", "status", "reason"], dropna=False)
    out = g.agg(passes=("pass", lambda s: ",".join(sorted(set(s)))), seq_lens=("seq_len", lambda s: ",".join(str(int(x)) for x in sorted(set(s)))), rows=("status", "size")).reset_index()
    out["reason"] = out["reason"].astype(str).str.slice(0, 120)
    return out


def write_report(paths: Iterable[str | Path], baseline: str = "softmax", out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its figures; returns the report's path."""
    paths = [Path(p) for p in paths]
    out = Path(out_dir) if out_dir else Path("reports") / "-".join(p.stem for p in paths)
    df = efficiency_rows(paths, baseline)  # raises on a missing or foreign file before anything is created
    out.mkdir(parents=True, exist_ok=True)
    figures = plot_results(df, baseline=baseline, out_dir=out)
    fig_names = {p.name for p in figures}
    lines = [f"# Efficiency report: {', '.join(p.name for p in paths)}", ""]
    lines.append(f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by `elastic-bench report` from {len(df)} rows. "
                 f"Speed-ups and memory reductions are against `{baseline}`, measured alike (same device, dtype, pass, level, "
                 "objective, batch and sequence length); only `ok` rows get one.\n")
    if df.empty:
        lines.append("_No efficiency rows._\n")
        (out / "report.md").write_text("\n".join(lines))
        return out / "report.md"
    env_cols = [c for c in ("device", "device_name", "host", "torch", "cuda", "triton", "git_sha", "mem_method", "timer_mode") if c in df]
    lines += ["## Environment", "", md_table(df[env_cols].drop_duplicates().reset_index(drop=True)), ""]
    lines += ["## Claim check (inference)", "",
              f"Paper (arXiv 2408.09380, withdrawn): up to {CLAIM_MEMORY:.0%} less GPU memory and ×{CLAIM_SPEEDUP} inference speed-up "
              "vs standard attention; baseline, length and hardware not stated. ELASTIC = models named `elastic*`; "
              "FlashAttention-class = the fastest of `sdpa*`, `flash-attn`, `xformers` that ran at that length.", ""]
    cc = claim_check(df)
    lines += [md_table(cc) if not cc.empty else "_No ELASTIC `infer` rows with status ok: nothing to check._\n", ""]
    for suffix, sub in figure_groups(df):
        first = sub.iloc[0]
        lines += [f"## {first['level']} level · {first['device_name'] or first['device']} · {first['dtype']}", ""]
        passes = [p for p in PASS_ORDER if p in set(sub["pass"])]
        for p in passes:
            rows = sub[(sub["pass"] == p) & (sub["status"] == "ok")]
            others = rows[rows["model"] != baseline]
            lines += [f"### {p}", ""]
            for title, col, kind in (("Latency p50 (ms)", "latency_ms_p50", "ms"), (f"Speed-up vs {baseline}", "speedup", "x"),
                                     ("Peak memory (MB)", "peak_mem_mb", "mb"), ("Activation memory (MB)", "act_mem_mb", "mb"),
                                     (f"Peak memory reduction vs {baseline}", "peak_mem_reduction", "%")):
                t = pivot(others if col in ("speedup", "peak_mem_reduction") else rows, col, kind)
                if not t.empty:
                    lines += [f"**{title}**", "", md_table(t), ""]
            for stem in ("latency", "speedup", "memory", "mem-reduction"):
                name = f"{stem}-{p}{suffix}.png"
                if name in fig_names:
                    lines.append(f"![{stem} {p}]({name})")
            lines.append("")
    nr = not_run(df)
    lines += ["## Cells that did not run", "", md_table(nr) if not nr.empty else "_All cells ran._\n"]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
