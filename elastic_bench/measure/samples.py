"""The latency columns of a row from its timing samples: quantiles, the 95 % cluster-bootstrap
interval of the median, and the samples themselves (``;`` within a process repeat, ``|``
between repeats); :func:`pool_rows` pools the rows of one cell's process repeats
(:mod:`elastic_bench.runs.repeats`)."""

from __future__ import annotations

import statistics
from typing import Any

from .bootstrap import median_ci, parse_samples
from .timer import quantile


def format_samples(groups: list[list[float]]) -> str:
    """``[[1.0, 1.1], [1.2]]`` -> ``"1.0;1.1|1.2"`` (4 significant digits)."""
    return "|".join(";".join(f"{v:.4g}" for v in g) for g in groups if g)


def timing_fields(groups: list[list[float]]) -> dict[str, Any]:
    """The latency columns of a row from its samples, one list per process repeat."""
    pooled = sorted(v for g in groups for v in g)
    if not pooled:
        return {}
    text = format_samples(groups)
    samples, ids = parse_samples(text)
    lo, hi = median_ci(samples, ids)
    return {
        "latency_ms_p50": statistics.median(pooled),
        "latency_ms_p20": quantile(pooled, 0.2),
        "latency_ms_p80": quantile(pooled, 0.8),
        "latency_ms_p99": quantile(pooled, 0.99),
        "latency_ms_ci_lo": lo,
        "latency_ms_ci_hi": hi,
        "latency_samples_ms": text,
        "n_samples": len(pooled),
        "n_repeats": sum(1 for g in groups if g),
    }


def pool_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rows of a cell's repeats (module docstring)."""
    for r in rows:
        if r.get("status") != "ok":
            return {**r, "n_repeats": len(rows)}
    groups = [[float(v) for v in str(r.get("latency_samples_ms") or "").replace("|", ";").split(";") if v] for r in rows]
    first = rows[0]
    out = {**first, **timing_fields(groups), "wall_s": round(sum(float(r.get("wall_s") or 0) for r in rows), 3)}
    if any(r.get("timing_group") for r in rows):  # rounds timed together: each round's token, in order
        out["timing_group"] = "|".join(str(r.get("timing_group") or "") for r in rows)
    modes = sorted({str(r.get("timer_mode") or "") for r in rows})
    if len(modes) > 1:  # a sweep resumed across a change of timer (e.g. the steady heap): say so, don't hide it
        out["timer_mode"] = "mixed:" + ",".join(modes)
    if out.get("latency_ms_p50"):
        out["tokens_per_s"] = first["batch"] * first["seq_len"] / (out["latency_ms_p50"] / 1e3)
    return out
