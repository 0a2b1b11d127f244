"""Speed-ups and memory reductions against a named baseline, derived from results rows.

Two rows are compared only when they were measured alike: same host, device (type and name), CPU threads,
dtype, pass, level, objective and loss, batch, sequence length, model width/depth,
catalogue, padding and dropout (:data:`MATCH_KEYS`).  Only ``status == "ok"`` rows on both
sides get a value; an ``incorrect``, ``oom``, ``skipped`` or ``error`` row never does.

- ``speedup = baseline latency p50 / latency p50``  (> 1: faster than the baseline)
- ``peak_mem_reduction = 1 - peak_mem_mb / baseline peak_mem_mb`` (0.9 = 90 % less)
- ``act_mem_reduction`` likewise on ``act_mem_mb``

Example::

    >>> df = with_baseline(load_results("results/sweep.csv"), "softmax")
    >>> df[["model", "seq_len", "speedup"]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MATCH_KEYS = (
    "host", "device", "device_name", "cpu_threads", "dtype", "pass", "level", "objective", "loss", "batch",
    "seq_len", "d_model", "heads", "layers", "n_items", "padding", "dropout",
)  # fmt: skip
DERIVED = ("speedup", "peak_mem_reduction", "act_mem_reduction")


def series_labels(df: pd.DataFrame) -> pd.Series:
    """``model`` plus the options that vary between rows of that model, plus the objective
    when rows of one pass differ in it, plus the batch when several batches share a length."""
    labels = df["model"].astype(str).copy()
    for model, sub in df.groupby("model"):
        if "options" in sub and sub["options"].nunique() > 1:
            varying = _varying_options(sub["options"])
            labels.loc[sub.index] = [f"{model} [{_keep(o, varying)}]" for o in sub["options"]]
    if "objective" in df:
        multi_obj = df.groupby(["pass", "model"])["objective"].transform("nunique") > 1
        has_obj = df["objective"].astype(str) != ""
        add = has_obj & (multi_obj | (df["pass"].isin(["fwd_bwd", "train_step"])))
        labels = labels.where(~add, labels + " (obj=" + df["objective"].astype(str) + ")")
    if "batch" in df and len(df):
        keys = [c for c in ("pass", "level", "dtype", "device_name", "seq_len") if c in df]
        multi_b = df.assign(_l=labels).groupby(keys + ["_l"])["batch"].transform("nunique") > 1
        labels = labels.where(~multi_b, labels + " B=" + df["batch"].astype("Int64").astype(str))
    return labels


def _parse_options(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in str(text).split(";") if "=" in kv)


def _varying_options(options: pd.Series) -> set[str]:
    parsed = [_parse_options(o) for o in options]
    keys = set().union(*parsed) if parsed else set()
    return {k for k in keys if len({p.get(k) for p in parsed}) > 1}


def _keep(text: str, keys: set[str]) -> str:
    return ",".join(f"{k}={v}" for k, v in _parse_options(text).items() if k in keys)


def match_key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One string per row joining ``keys`` (missing values as ''), so NaN matches NaN."""
    return df[keys].apply(lambda col: col.map(lambda v: "" if pd.isna(v) else str(v))).agg("|".join, axis=1)


def with_baseline(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """``df`` plus ``baseline_*`` and :data:`DERIVED` columns (NaN where not comparable)."""
    out = df.copy()
    for c in DERIVED + ("baseline_latency_ms", "baseline_peak_mem_mb", "baseline_act_mem_mb"):
        out[c] = np.nan
    if out.empty:
        return out
    keys = [k for k in MATCH_KEYS if k in out.columns]
    key = match_key(out, keys)
    ok = out["status"] == "ok"
    base = out[ok & (out["model"] == baseline)].assign(_key=key)
    base = base.drop_duplicates(subset="_key", keep="first").set_index("_key")
    for src, dst in (("latency_ms_p50", "baseline_latency_ms"), ("peak_mem_mb", "baseline_peak_mem_mb"), ("act_mem_mb", "baseline_act_mem_mb")):
        out[dst] = key.map(base[src]).where(ok)
    out["speedup"] = out["baseline_latency_ms"] / out["latency_ms_p50"]
    out["peak_mem_reduction"] = 1 - out["peak_mem_mb"] / out["baseline_peak_mem_mb"]
    out["act_mem_reduction"] = 1 - out["act_mem_mb"] / out["baseline_act_mem_mb"]
    out.loc[~ok, list(DERIVED)] = np.nan
    return out
