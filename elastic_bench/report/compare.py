"""Speed-ups and memory reductions against a named baseline, derived from results rows.

Two rows are compared only when they were measured alike: same host, device (type and name), CPU threads,
dtype (and precision regime), pass, level, objective and loss, **causality**, batch, sequence length, model width/depth,
catalogue, padding and dropout, and the same code and torch (``git_sha``, ``torch``): :data:`MATCH_KEYS`.
Only ``status == "ok"`` rows on both sides get a value; an ``incorrect``, ``oom``, ``skipped`` or
``error`` row never does.

Provenance is strict: a row and a baseline row from different code (``git_sha``) or a different
torch are never paired, since a resumed sweep may mix them.  :func:`provenance_mismatches` lists
the rows that lost their baseline only for that reason; :func:`with_baseline` warns about them
(``warnings.warn``) and the report prints them.

- ``speedup = baseline latency p50 / latency p50``  (> 1: faster than the baseline), with
  ``speedup_ci_lo/hi``: the 95 % bootstrap CI of that ratio of medians from both rows' raw
  timing samples (``latency_samples_ms``; NaN when either row lacks them: no CI is invented)
- ``peak_mem_reduction = 1 - peak_mem_mb / baseline peak_mem_mb`` (0.9 = 90 % less)
- ``act_mem_reduction`` likewise on ``act_mem_mb``

:func:`with_floor` adds each row's ratio to the ``no-mixing`` floor (the same recommender with no
token mixing: what no attention can beat) measured alike.

Example::

    >>> df = with_baseline(load_results("results/sweep.csv"), "softmax")
    >>> df[["model", "seq_len", "speedup", "speedup_ci_lo", "speedup_ci_hi"]]
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..measure.bootstrap import median_ci, parse_samples, rows_ratio_ci

PROVENANCE_KEYS = ("git_sha", "torch", "timer_mode")  # timer_mode: rows timed on different heaps do not pair (measure/steady_heap.py)
MATCH_KEYS = (
    "host", "device", "device_name", "cpu_threads", "dtype", "precision", "pass", "level", "objective", "loss", "causal", "batch",
    "seq_len", "d_model", "heads", "layers", "n_items", "padding", "dropout",
) + PROVENANCE_KEYS  # fmt: skip
DERIVED = ("speedup", "speedup_ci_lo", "speedup_ci_hi", "peak_mem_reduction", "act_mem_reduction")
FLOOR = "no-mixing"  # the backend that mixes no tokens: the floor no attention can beat
FLOOR_DERIVED = ("latency_vs_floor", "latency_vs_floor_ci_lo", "latency_vs_floor_ci_hi", "peak_mem_vs_floor", "act_mem_vs_floor")


def is_exact(model: str) -> bool:
    """Exact softmax attention (any kernel): ``softmax``, ``sdpa*``, ``flash-attn``, ``xformers``."""
    m = str(model)
    return m == "softmax" or m.startswith("sdpa") or m in ("flash-attn", "xformers")


def is_flash_class(model: str) -> bool:
    """Fused exact kernels: ``sdpa*`` except ``sdpa-math`` (the unfused reference), ``flash-attn``, ``xformers``."""
    m = str(model)
    return (m.startswith("sdpa") and m != "sdpa-math") or m in ("flash-attn", "xformers")


def is_floor(model: str) -> bool:
    return str(model) == FLOOR


def causal_value(v: object) -> bool | None:
    """The ``causal`` cell as a bool (CSV text ``True``/``False``), None when not recorded."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    t = "" if v is None or (isinstance(v, float) and v != v) else str(v).strip().lower()
    return True if t in ("true", "1", "yes") else False if t in ("false", "0", "no") else None


def causality_text(v: object) -> str:
    """``causal`` | ``non-causal`` | ``causality not recorded``."""
    c = causal_value(v)
    return "causality not recorded" if c is None else ("causal" if c else "non-causal")


def series_labels(df: pd.DataFrame) -> pd.Series:
    """``model`` plus the options that vary between rows of that model, then in parentheses its
    causality (always) and the objective (when rows of one pass differ in it, or on training
    passes), plus the batch when several batches share a length: ``linear (causal)``,
    ``elastic (non-causal, obj=last)``, ``no-mixing (floor)``."""
    labels = df["model"].astype(str).copy()
    for model, sub in df.groupby("model"):
        if "options" in sub and sub["options"].nunique() > 1:
            varying = _varying_options(sub["options"])
            labels.loc[sub.index] = [f"{model} [{_keep(o, varying)}]" for o in sub["options"]]
    tags = pd.Series([causality_text(v) for v in df["causal"]] if "causal" in df else ["causality not recorded"] * len(df),
                     index=df.index, dtype=object)  # fmt: skip
    if "model" in df:
        floor = df["model"].map(is_floor)
        if floor.any():
            tags = tags.where(~floor, "floor")  # mixes no tokens: causal and non-causal at once
    if "objective" in df:
        multi_obj = df.groupby(["pass", "model"])["objective"].transform("nunique") > 1
        has_obj = df["objective"].astype(str) != ""
        add = has_obj & (multi_obj | (df["pass"].isin(["fwd_bwd", "train_step"])))
        tags = tags.where(~add, tags + ", obj=" + df["objective"].astype(str))
    labels = labels + " (" + tags + ")"
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


def has_samples(df: pd.DataFrame) -> pd.Series:
    """Per row: the raw timing samples are in the CSV (``latency_samples_ms`` non-empty)."""
    if "latency_samples_ms" not in df:
        return pd.Series(False, index=df.index)
    return df["latency_samples_ms"].map(lambda v: isinstance(v, str) and bool(v.strip()))


def with_latency_ci(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``latency_ms_ci_lo/hi`` (95 % bootstrap CI of the median): the recorded ones where
    the CSV has them, else computed from ``latency_samples_ms``, else NaN (unavailable); and
    ``n_repeats`` (1 where not recorded)."""
    out = df.copy()
    for c in ("latency_ms_ci_lo", "latency_ms_ci_hi"):
        out[c] = pd.to_numeric(out[c], errors="coerce") if c in out else np.nan
    out["n_repeats"] = pd.to_numeric(out["n_repeats"], errors="coerce").fillna(1) if "n_repeats" in out else 1.0
    if out.empty:
        return out
    need = has_samples(out) & (out["latency_ms_ci_lo"].isna() | out["latency_ms_ci_hi"].isna())
    for idx in out.index[need]:
        x, g = parse_samples(out.at[idx, "latency_samples_ms"])
        out.at[idx, "latency_ms_ci_lo"], out.at[idx, "latency_ms_ci_hi"] = median_ci(x, g)
    return out


def _ratio_ci(num_row: pd.Series, den_row: pd.Series) -> tuple[float, float]:
    """The CI of ``num_row``'s latency over ``den_row``'s (paired when they were timed together)."""
    _, lo, hi, _ = rows_ratio_ci(num_row, den_row)
    return lo, hi


def _paired(out: pd.DataFrame, ref: pd.DataFrame, keys: list[str], prefer_same_causal: bool = False) -> pd.Series:
    """Per row of ``out``: the index of its reference row in ``ref`` (matched on ``keys``), or NaN."""
    key = match_key(out, keys)
    if ref.empty:
        return pd.Series(np.nan, index=out.index)
    rkey = match_key(ref, keys)
    if not prefer_same_causal or "causal" not in out:
        first = pd.Series(ref.index, index=rkey.values)
        first = first[~first.index.duplicated(keep="first")]
        return key.map(first)
    picks = {}
    cands = pd.Series(ref.index, index=rkey.values)
    for idx, k in key.items():
        if k not in cands.index:
            continue
        rows = cands.loc[[k]].tolist()
        same = [r for r in rows if causal_value(ref.at[r, "causal"]) == causal_value(out.at[idx, "causal"])]
        picks[idx] = (same or rows)[0]
    return pd.Series(picks, index=out.index, dtype=float)


def with_baseline(df: pd.DataFrame, baseline: str, warn: bool = True) -> pd.DataFrame:
    """``df`` plus ``baseline_*`` and :data:`DERIVED` columns (NaN where not comparable), the
    latency CI columns of :func:`with_latency_ci`, and the floor columns of :func:`with_floor`.
    Warns when rows lost their baseline only because ``git_sha``/``torch`` differ."""
    out = with_latency_ci(df)
    for c in DERIVED + ("baseline_latency_ms", "baseline_peak_mem_mb", "baseline_act_mem_mb"):
        out[c] = np.nan
    if out.empty:
        return with_floor(out)
    keys = [k for k in MATCH_KEYS if k in out.columns]
    ok = out["status"] == "ok"
    base = out[ok & (out["model"] == baseline)]
    pair = _paired(out, base, keys).where(ok)
    for src, dst in (("latency_ms_p50", "baseline_latency_ms"), ("peak_mem_mb", "baseline_peak_mem_mb"), ("act_mem_mb", "baseline_act_mem_mb")):
        out[dst] = pair.map(lambda i: base.at[i, src] if i == i else np.nan).astype(float)
    out["speedup"] = out["baseline_latency_ms"] / out["latency_ms_p50"]
    if "latency_samples_ms" in out:
        for idx in out.index[pair.notna() & has_samples(out)]:
            out.loc[idx, ["speedup_ci_lo", "speedup_ci_hi"]] = _ratio_ci(base.loc[pair[idx]], out.loc[idx])
    out["peak_mem_reduction"] = 1 - out["peak_mem_mb"] / out["baseline_peak_mem_mb"]
    out["act_mem_reduction"] = 1 - out["act_mem_mb"] / out["baseline_act_mem_mb"]
    out.loc[~ok, list(DERIVED)] = np.nan
    if warn:
        bad = provenance_mismatches(out, baseline)
        if not bad.empty:
            warnings.warn(
                f"{len(bad)} row(s) have a {baseline!r} row measured alike but from a different git_sha/torch; "
                "they are not compared (see provenance_mismatches)", stacklevel=2,
            )  # fmt: skip
    return with_floor(out)


def provenance_mismatches(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Rows (model, pass, seq_len, git_sha, torch) with no ``baseline`` row under :data:`MATCH_KEYS`
    that would have one if ``git_sha`` and ``torch`` were ignored, with the baseline's provenance."""
    cols = ["model", "pass", "seq_len", "git_sha", "torch", "baseline git_sha", "baseline torch"]
    if df.empty or not all(k in df for k in PROVENANCE_KEYS):
        return pd.DataFrame(columns=cols)
    ok = df[df["status"] == "ok"]
    keys = [k for k in MATCH_KEYS if k in df and k not in PROVENANCE_KEYS]
    full = [k for k in MATCH_KEYS if k in df]
    base = ok[ok["model"] == baseline]
    if base.empty:
        return pd.DataFrame(columns=cols)
    loose = _paired(ok, base, keys)
    strict = _paired(ok, base, full)
    lost = ok[loose.notna() & strict.isna() & (ok["model"] != baseline)]
    rows = []
    for idx, r in lost.iterrows():
        b = base.loc[loose[idx]]
        rows.append([r["model"], r["pass"], int(r["seq_len"]), r["git_sha"], r["torch"], b["git_sha"], b["torch"]])
    return pd.DataFrame(rows, columns=cols)


def with_floor(df: pd.DataFrame, floor: str = FLOOR) -> pd.DataFrame:
    """``df`` plus ``floor_latency_ms``, ``floor_peak_mem_mb`` and :data:`FLOOR_DERIVED`: each ok row's
    latency and memory over the ``floor`` row measured alike (:data:`MATCH_KEYS` except ``causal``,
    since a backend that mixes no tokens is causal and non-causal at once; a floor row of the same
    causality is preferred when there are both).  ≥ 1 means slower / larger than the floor.
    ``latency_vs_floor_ci_lo/hi``: bootstrap CI from both rows' raw samples, NaN without them."""
    out = df.copy()
    for c in FLOOR_DERIVED + ("floor_latency_ms", "floor_peak_mem_mb", "floor_act_mem_mb"):
        out[c] = np.nan
    if out.empty or "model" not in out:
        return out
    ok = out["status"] == "ok"
    ref = out[ok & (out["model"] == floor)]
    if ref.empty:
        return out
    keys = [k for k in MATCH_KEYS if k in out.columns and k != "causal"]
    pair = _paired(out, ref, keys, prefer_same_causal=True).where(ok)
    for src, dst in (("latency_ms_p50", "floor_latency_ms"), ("peak_mem_mb", "floor_peak_mem_mb"), ("act_mem_mb", "floor_act_mem_mb")):
        out[dst] = pair.map(lambda i: ref.at[i, src] if i == i else np.nan).astype(float)
    out["latency_vs_floor"] = out["latency_ms_p50"] / out["floor_latency_ms"]
    out["peak_mem_vs_floor"] = out["peak_mem_mb"] / out["floor_peak_mem_mb"]
    out["act_mem_vs_floor"] = out["act_mem_mb"] / out["floor_act_mem_mb"]
    if "latency_samples_ms" in out:
        for idx in out.index[pair.notna() & has_samples(out)]:
            out.loc[idx, ["latency_vs_floor_ci_lo", "latency_vs_floor_ci_hi"]] = _ratio_ci(out.loc[idx], ref.loc[pair[idx]])
    out.loc[~ok | out["model"].map(is_floor), list(FLOOR_DERIVED)] = np.nan
    return out
