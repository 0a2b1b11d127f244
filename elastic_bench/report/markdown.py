"""A Markdown report of one or more results CSVs: tables, figures and the claim check.

``reports/<name>/report.md`` holds a "Serving" section where the CSV has ``serve`` / ``serve_step``
rows (:func:`serving_section`: p50 and p99, who wins ``serve``, each step's path and the per-user
state in bytes, the issue-13 target ratios as measured), then, per (level, device, dtype) and pass,
the latency (with its
95 % bootstrap CI), speed-up (with the CI of the ratio), memory, ratio-to-floor and throughput
tables (one row per sequence length, one column per series: model, causality, objective), the
figures of :mod:`.plots`, the rows that did not run (``oom``, ``skipped``, ``incorrect``,
``error``) with their reasons, the rows left unpaired because their code or torch differ from
their baseline's, and the **claim check** (:func:`claim_check`).

Every comparison pairs rows measured alike (:data:`.compare.MATCH_KEYS`: same device, threads,
dtype, pass, level, objective, **causality**, batch, length, shape, padding, dropout, code and
torch).  Every table has a footnote naming batch or tokens per batch, padding, causality, CPU
threads and the number of timing samples, and what its CI is (timing jitter of one seed's model;
accuracy's seed variance is never mixed in: no accuracy here).

Claim check: at each sequence length, each ELASTIC series' (models named ``elastic*``)
inference speed-up and memory reduction

- vs ``softmax`` (eager): the paper's "standard attention";
- vs the **fastest exact** backend (speed) and the **lowest-memory exact** backend (memory)
  measured alike; exact = ``softmax``, ``sdpa*``, ``flash-attn``, ``xformers``
  (:func:`.compare.is_exact`; ``sdpa-math`` is exact but not flash-class);

beside the paper's claims (90 % less memory, ×2.7 faster inference).  CPU rows are marked
"not evidence for the GPU claim".

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

from ..measure.bootstrap import rows_ratio_ci
from .accounting import flops_is_partial, flops_label, format_flops
from .compare import (
    MATCH_KEYS,
    is_exact,
    is_flash_class,
    is_floor,
    match_key,
    provenance_mismatches,
)
from .figure_kit import PASS_ORDER, ci_note, efficiency_rows, figure_groups, footnote
from .plots import plot_results

CLAIM_MEMORY = 0.90  # "up to 90 % less GPU memory"
CLAIM_SPEEDUP = 2.7  # "×2.7 inference speed-up"
CPU_NOTE = "CPU: not evidence for the GPU claim"
__all__ = ["CLAIM_MEMORY", "CLAIM_SPEEDUP", "claim_check", "is_elastic", "is_exact", "is_flash_class", "write_report"]


def is_elastic(model: str) -> bool:
    return str(model).startswith("elastic")


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


def fmt_ci(v: object, lo: object, hi: object, kind: str) -> str:
    """``v [lo, hi]`` in ``kind``'s format, or ``v (CI n/a)`` when the interval is unavailable."""
    text = _fmt(v, kind)
    if text == "–":
        return text
    if lo is None or hi is None or not (np.isfinite(float(lo)) and np.isfinite(float(hi))):  # type: ignore[arg-type]
        return f"{text} (CI n/a)"
    return f"{text} [{_fmt(lo, kind).lstrip('×')}, {_fmt(hi, kind).lstrip('×')}]"


def _speedup_ci(ref: pd.Series, row: pd.Series) -> tuple[float, float, float]:
    """``ref latency / row latency`` (medians of the rows) and the bootstrap CI from their raw samples."""
    ratio = float(ref["latency_ms_p50"]) / float(row["latency_ms_p50"])
    _, lo, hi, _ = rows_ratio_ci(ref, row)  # paired when the rows were timed together
    return ratio, lo, hi


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(x) for x in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


def pivot(rows: pd.DataFrame, value: str, kind: str, ci: tuple[str, str] | None = None) -> pd.DataFrame:
    """seq_len × series table of ``value``; with ``ci`` columns, each cell ``v [lo, hi]`` (or ``(CI n/a)``)."""
    if rows.empty or value not in rows or rows[value].notna().sum() == 0:
        return pd.DataFrame()
    if ci and ci[0] in rows and ci[1] in rows:
        cells = rows.assign(_cell=[fmt_ci(v, lo, hi, kind) for v, lo, hi in zip(rows[value], rows[ci[0]], rows[ci[1]])])
    else:
        cells = rows.assign(_cell=[_fmt(v, kind) for v in rows[value]])
    cells = cells[rows[value].notna()]
    t = cells.pivot_table(index="seq_len", columns="series", values="_cell", aggfunc="first").fillna("–")
    t.index = [int(i) for i in t.index]
    return t.reset_index().rename(columns={"index": "seq_len"})


def throughput_table(rows: pd.DataFrame) -> pd.DataFrame:
    """seq_len × series of TFLOP/s = flops / latency p50, each cell labelled with its ``flops_method``;
    a partial or unlabelled count is written ``≥ v (method)``: never presented as complete."""
    if rows.empty or "flops" not in rows or rows["flops"].notna().sum() == 0:
        return pd.DataFrame()
    r = rows[rows["flops"].notna() & (rows["flops"] > 0)]
    tflops = r["flops"] / (r["latency_ms_p50"] * 1e-3) / 1e12
    method = r["flops_method"] if "flops_method" in r else pd.Series("", index=r.index)
    return pivot(r.assign(_tflops=[format_flops(v, m, "{:.3g}") for v, m in zip(tflops, method)]), "_tflops", "")


def table_note(rows: pd.DataFrame, baseline: str | None = None, ci_what: str | None = None) -> str:
    """The footnote under a table: :func:`.figure_kit.footnote` in one line, plus what the CI is."""
    text = footnote(rows, baseline).replace("\n", " · ")
    if ci_what:
        text += " · " + ci_note(rows, ci_what)
    return f"<sub>{text}</sub>"


def _cmp_cells(e: pd.Series, ref: pd.Series | None, prefix: str) -> dict[str, str]:
    if ref is None:
        return {f"speed-up vs {prefix}": "–", f"peak mem reduction vs {prefix}": "–"}
    sp, lo, hi = _speedup_ci(ref, e)
    return {f"speed-up vs {prefix}": fmt_ci(sp, lo, hi, "x"), f"peak mem reduction vs {prefix}": _fmt(1 - e["peak_mem_mb"] / ref["peak_mem_mb"], "%")}


def _meets(e: pd.Series, fast: pd.Series | None, small: pd.Series | None) -> str:
    if fast is None and small is None:
        return "–"
    sp = "–" if fast is None else ("yes" if fast["latency_ms_p50"] / e["latency_ms_p50"] >= CLAIM_SPEEDUP else "no")
    mr = "–" if small is None else ("yes" if 1 - e["peak_mem_mb"] / small["peak_mem_mb"] >= CLAIM_MEMORY else "no")
    return f"speed {sp}, memory {mr}"


def claim_check(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, ELASTIC series, seq_len) from ``infer`` rows (see the module doc): vs eager
    ``softmax``, vs the fastest exact backend (speed) and the lowest-memory exact backend (memory), all
    measured alike (same causality included), with bootstrap CIs of the speed-ups where raw samples exist."""
    rows = []
    ok = df[(df["status"] == "ok") & (df["pass"] == "infer")]
    keys = [k for k in MATCH_KEYS if k in df and k != "objective" and k != "loss"]
    train = df[(df["status"] == "ok") & (df["pass"] == "train_step")]
    ok_keys = match_key(ok, keys) if len(ok) else pd.Series(dtype=str)
    for idx, e in ok[ok["model"].map(is_elastic).astype(bool)].sort_values(["level", "dtype", "seq_len"]).iterrows():
        same = ok[ok_keys == ok_keys[idx]]
        soft = same[same["model"] == "softmax"]
        exact = same[same["model"].map(is_exact)]
        s = soft.iloc[0] if not soft.empty else None
        fast = exact.sort_values("latency_ms_p50").iloc[0] if not exact.empty else None
        small = exact.sort_values("peak_mem_mb").iloc[0] if not exact.empty and exact["peak_mem_mb"].notna().any() else None
        row = {
            "level": e["level"],
            "device": e["device_name"] or e["device"],
            "dtype": e["dtype"],
            "model": e["series"],
            "seq_len": int(e["seq_len"]),
            "batch": int(e["batch"]),
            "latency ms [95 % CI]": fmt_ci(e["latency_ms_p50"], e.get("latency_ms_ci_lo"), e.get("latency_ms_ci_hi"), "ms"),
        }
        row.update(_cmp_cells(e, s, "softmax"))
        row["act mem reduction vs softmax"] = _fmt(1 - e["act_mem_mb"] / s["act_mem_mb"], "%") if s is not None else "–"
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
        row["fastest exact"] = "none ran alike" if fast is None else fast["model"] + (" (flash-class)" if is_flash_class(fast["model"]) else "")
        row["speed-up vs fastest exact"] = _cmp_cells(e, fast, "x")["speed-up vs x"]
        row["lowest-memory exact"] = "none ran alike" if small is None else small["model"]
        row["peak mem reduction vs lowest-memory exact"] = _cmp_cells(e, small, "x")["peak mem reduction vs x"]
        row[f"meets claim vs softmax (×{CLAIM_SPEEDUP}, {CLAIM_MEMORY:.0%})"] = _meets(e, s, s)
        row["meets claim vs best exact"] = _meets(e, fast, small)
        row["evidence"] = CPU_NOTE if str(e["device"]).startswith("cpu") else "GPU row"
        rows.append(row)
    return pd.DataFrame(rows)


def missing_alike(df: pd.DataFrame) -> list[str]:
    """ELASTIC infer series with no softmax row measured alike (e.g. non-causal elastic in a sweep whose
    baselines all ran causal): one line each, so the report says why their comparisons are blank."""
    ok = df[(df["status"] == "ok") & (df["pass"] == "infer")]
    if ok.empty:
        return []
    keys = [k for k in MATCH_KEYS if k in df and k not in ("objective", "loss")]
    key = match_key(ok, keys)
    soft = set(key[ok["model"] == "softmax"])
    out = []
    for series, sub in ok[ok["model"].map(is_elastic).astype(bool)].groupby("series"):
        lens = sorted(int(n) for n, k in zip(sub["seq_len"], key[sub.index]) if k not in soft)
        if lens:
            out.append(f"`{series}`: no `softmax` row of the same causality (and other match keys) at N = {', '.join(map(str, lens))}")
    return out


def floor_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with a ratio to the ``no-mixing`` floor (the floor itself excluded)."""
    if "latency_vs_floor" not in rows:
        return rows.iloc[0:0]
    return rows[rows["latency_vs_floor"].notna() & ~rows["model"].map(is_floor)]


def not_run(df: pd.DataFrame) -> pd.DataFrame:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame()
    g = bad.groupby(["model", "status", "reason"], dropna=False)
    out = g.agg(passes=("pass", lambda s: ",".join(sorted(set(s)))), seq_lens=("seq_len", lambda s: ",".join(str(int(x)) for x in sorted(set(s)))), rows=("status", "size")).reset_index()
    out["reason"] = out["reason"].astype(str).str.slice(0, 120)
    return out


def _provenance_lines(df: pd.DataFrame, baseline: str) -> list[str]:
    bad = provenance_mismatches(df, baseline)
    lines = ["## Provenance", "",
             "Rows are paired only when their code (`git_sha`) and `torch` are the same as their baseline's "
             "(a resumed sweep can mix them)."]  # fmt: skip
    if bad.empty:
        lines += ["No row lost its baseline to a provenance difference.", ""]
    else:
        lines += [f"**Warning: {len(bad)} row(s) have a `{baseline}` row measured alike but from other code or torch; "
                  "they are not compared.** Rerun them in one session to compare.", "", md_table(bad), ""]  # fmt: skip
    return lines


def serving_section(df: pd.DataFrame) -> list[str]:
    """The report's "Serving" section: per group, ``serve`` latency (p50, p99) and who wins at each N
    and batch; ``serve_step`` latency (p50, p99), its path and the per-user state in bytes (per layer
    and in total) at each history length.  ``[]`` when the CSV has no serving rows."""
    from .serving_plots import serving_rows, step_path

    rows = serving_rows(df)
    if rows.empty:
        return []
    lines = ["## Serving", "",
             "`serve`: the user representation at the last real position, every position in layers 1..L-1 and the last "
             "query only in layer L (inference mode, serving batch). `serve_step`: one appended interaction from a per-user "
             "state built untimed from a history of N items (path: `kv-cache`, `running-state`, or `recompute` for non-causal "
             "models). State = bytes of the per-user state tensors (recompute: the int64 item history).", ""]  # fmt: skip
    for suffix, sub in figure_groups(rows):
        first = sub.iloc[0]
        lines += [f"### {first['level']} level · {first['device_name'] or first['device']} · {first['dtype']}", ""]
        serve = sub[sub["pass"] == "serve"]
        if not serve.empty:
            win = []
            for (b, n), g in serve.groupby(["batch", "seq_len"]):
                g = g.sort_values("latency_ms_p50")
                best, second = g.iloc[0], (g.iloc[1] if len(g) > 1 else None)
                margin = f"×{second['latency_ms_p50'] / best['latency_ms_p50']:.2f} ahead of {second['series']}" if second is not None else "alone"
                win.append({"batch": int(b), "N": int(n), "fastest": best["series"], "p50 ms": _fmt(best["latency_ms_p50"], "ms"),
                            "margin": margin, "backends measured": len(g)})  # fmt: skip
            lines += ["**serve: latency p50 / p99 (ms)**", "", md_table(_p50_p99(serve)), "", "**serve: who wins**", "", md_table(pd.DataFrame(win)),
                      table_note(serve), ""]  # fmt: skip
        step = sub[sub["pass"] == "serve_step"]
        if not step.empty:
            t = step.assign(path=step["backend_detail"].map(step_path))
            cols = ["series", "batch", "seq_len", "path", "latency_ms_p50", "latency_ms_p99", "state_bytes_per_layer", "state_bytes_per_user"]
            t = t[[c for c in cols if c in t]].sort_values(["series", "batch", "seq_len"])
            t = t.assign(latency_ms_p50=t["latency_ms_p50"].map(lambda v: _fmt(v, "ms")), latency_ms_p99=t["latency_ms_p99"].map(lambda v: _fmt(v, "ms")))
            for c in ("state_bytes_per_layer", "state_bytes_per_user"):
                if c in t:
                    t[c] = t[c].map(lambda v: f"{int(v):,}" if v == v else "–")
            lines += ["**serve_step: latency of one appended item and the per-user state**", "", md_table(t.reset_index(drop=True)), table_note(step), ""]
            lines += _serving_ratios(step)
        for stem in ("serve-step-latency", "serve-state-bytes", "serve-latency"):
            lines.append(f"![{stem}]({stem}{suffix}.png)")
        lines.append("")
    return lines


def _p50_p99(rows: pd.DataFrame) -> pd.DataFrame:
    cells = rows.assign(_cell=[f"{_fmt(a, 'ms')} / {_fmt(b, 'ms')}" for a, b in zip(rows["latency_ms_p50"], rows.get("latency_ms_p99", rows["latency_ms_p50"] * np.nan))])
    t = cells.pivot_table(index=["batch", "seq_len"], columns="series", values="_cell", aggfunc="first").fillna("–")
    return t.reset_index()


def _serving_ratios(step: pd.DataFrame) -> list[str]:
    """The issue-13 targets, as measured: flatness of the stateful steps (N max / N=256 or the
    smallest N), and elastic-causal vs the SDPA KV cache at the longest N (speed and state)."""
    out = []
    for series, g in step.groupby("series"):
        if "running-state" not in series:
            continue
        g = g[g["batch"] == g["batch"].min()].sort_values("seq_len")
        lo = g[g["seq_len"] == 256] if (g["seq_len"] == 256).any() and g["seq_len"].max() > 256 else g.iloc[:1]
        hi = g.iloc[-1:]
        if len(g) > 1:
            r = float(hi["latency_ms_p50"].iloc[0]) / float(lo["latency_ms_p50"].iloc[0])
            out.append(f"- `{series}`: step latency at N = {int(hi['seq_len'].iloc[0])} is ×{r:.2f} the one at N = {int(lo['seq_len'].iloc[0])} (target ≤ ×1.2: flat)")
    n = step["seq_len"].max()
    at = step[(step["seq_len"] == n) & (step["batch"] == step["batch"].min())]
    ec = at[(at["model"] == "elastic-causal") & at["backend_detail"].astype(str).str.startswith("running-state")]
    kv = at[(at["model"] == "sdpa") & at["backend_detail"].astype(str).str.startswith("kv-cache")]
    if not ec.empty and not kv.empty:
        sp = float(kv["latency_ms_p50"].iloc[0]) / float(ec["latency_ms_p50"].iloc[0])
        red = 1 - float(ec["state_bytes_per_user"].iloc[0]) / float(kv["state_bytes_per_user"].iloc[0])
        out.append(f"- N = {int(n)}: `elastic-causal` step ×{sp:.1f} faster than the `sdpa` KV cache (target ≥ ×10); "
                   f"its per-user state {red:.1%} smaller (target ≥ 90 %)")  # fmt: skip
    return out + ([""] if out else [])


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
                 f"Speed-ups and memory reductions are against `{baseline}`, measured alike: same "
                 f"{', '.join(k for k in MATCH_KEYS)} (causality included: a causal row is only compared with a causal row); "
                 "only `ok` rows get one. Series are named `model [options] (causality, objective)`.\n")
    if df.empty:
        lines.append("_No efficiency rows._\n")
        (out / "report.md").write_text("\n".join(lines))
        return out / "report.md"
    lines += ["Statistics: latency cells are the median of the row's timing samples with its 95 % bootstrap CI "
              "`[lo, hi]` (cluster bootstrap over repeat processes); speed-ups carry the 95 % bootstrap CI of the ratio of "
              "medians. Both describe timing jitter of one seed's model only, never seed variance. `(CI n/a)`: the row "
              "has no raw timing samples (`latency_samples_ms`), so no interval is given.", ""]  # fmt: skip
    env_cols = [c for c in ("device", "device_name", "host", "torch", "cuda", "triton", "git_sha", "mem_method", "timer_mode") if c in df]
    lines += ["## Environment", "", md_table(df[env_cols].drop_duplicates().reset_index(drop=True)), ""]
    lines += _provenance_lines(df, baseline)
    lines += ["## Claim check (inference)", "",
              f"Paper (arXiv 2408.09380, withdrawn): up to {CLAIM_MEMORY:.0%} less GPU memory and ×{CLAIM_SPEEDUP} inference speed-up "
              "vs standard attention; baseline, length and hardware not stated. ELASTIC = models named `elastic*`. "
              "Standard attention = eager `softmax` (the paper's baseline). The claim is also judged against the best exact "
              "attention measured alike (same causality and match keys): the fastest exact backend for speed and the "
              "lowest-memory exact backend for memory; exact = `softmax`, `sdpa*`, `flash-attn`, `xformers` "
              "(flash-class = those fused kernels, not `sdpa-math`). "
              f"The paper's claim is about GPUs: rows measured on a CPU are marked \"{CPU_NOTE}\".", ""]  # fmt: skip
    cc = claim_check(df)
    lines += [md_table(cc) if not cc.empty else "_No ELASTIC `infer` rows with status ok: nothing to check._\n", ""]
    for m in missing_alike(df):
        lines.append(f"- {m}: its comparisons are blank (run the sweep with `--causal auto` or `--causal no` to measure one).")
    infer_ok = df[(df["pass"] == "infer") & (df["status"] == "ok")]
    if not infer_ok.empty:
        lines += ["", table_note(infer_ok, "softmax and the best exact backends", "speed-up CI")]
    lines.append("")
    lines += serving_section(df)
    for suffix, sub in figure_groups(df):
        first = sub.iloc[0]
        lines += [f"## {first['level']} level · {first['device_name'] or first['device']} · {first['dtype']}", ""]
        passes = [p for p in PASS_ORDER if p in set(sub["pass"])]
        for p in passes:
            rows = sub[(sub["pass"] == p) & (sub["status"] == "ok")]
            others = rows[rows["model"] != baseline]
            lines += [f"### {p}", ""]
            tables = (
                ("Latency p50 (ms) [95 % CI of the median]", rows, "latency_ms_p50", "ms", ("latency_ms_ci_lo", "latency_ms_ci_hi"), None, "latency CI"),
                (f"Speed-up vs {baseline} (same causality) [95 % CI]", others, "speedup", "x", ("speedup_ci_lo", "speedup_ci_hi"), baseline, "speed-up CI"),
                ("Peak memory (MB)", rows, "peak_mem_mb", "mb", None, None, None),
                ("Activation memory (MB)", rows, "act_mem_mb", "mb", None, None, None),
                (f"Peak memory reduction vs {baseline} (same causality)", others, "peak_mem_reduction", "%", None, baseline, None),
                ("Latency / no-mixing floor latency [95 % CI] (1 = the floor; lower is better)", floor_rows(rows), "latency_vs_floor", "x",
                 ("latency_vs_floor_ci_lo", "latency_vs_floor_ci_hi"), "no-mixing", "ratio CI"),
                ("Peak memory / no-mixing floor peak memory", floor_rows(rows), "peak_mem_vs_floor", "x", None, "no-mixing", None),
            )  # fmt: skip
            for title, src, col, kind, ci, base, ci_what in tables:
                t = pivot(src, col, kind, ci)
                if not t.empty:
                    lines += [f"**{title}**", "", md_table(t), table_note(src, base, ci_what), ""]
            tp = throughput_table(rows)
            if not tp.empty:
                methods = sorted({str(m) for m in rows.get("flops_method", pd.Series(dtype=str)) if str(m)})
                partial = any(flops_is_partial(m) for m in rows.get("flops_method", pd.Series(dtype=str)))
                lines += ["**Throughput (TFLOP/s = FLOPs / latency p50; FLOPs method in each cell)**", "", md_table(tp),
                          "<sub>FLOPs methods: " + "; ".join(f"`{m}` = {flops_label(m)}" for m in methods)
                          + (". `≥`: a partial or unlabelled count, a lower bound, not a complete count." if partial else ".")
                          + " · " + table_note(rows).removeprefix("<sub>"), ""]  # fmt: skip
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
