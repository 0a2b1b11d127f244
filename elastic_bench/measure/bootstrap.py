"""Bootstrap confidence intervals of a median latency and of a ratio of two medians.

The raw timing samples of a cell travel in the results CSV as text (``latency_samples_ms``):
``;`` between the samples (ms) of one process, ``|`` between repeats that ran in separate
processes.  :func:`parse_samples` reads that text back into ``(samples, groups)``.

- :func:`median_ci`  percentile bootstrap CI of the median.  With more than one repeat
  group it is a **cluster bootstrap**: each replicate draws the groups with replacement,
  then the samples within each drawn group with replacement, and takes the median of the
  pooled draw; so the interval covers the process-to-process spread as well as the
  within-process jitter.  With one group it is the ordinary bootstrap.
- :func:`ratio_ci`   ``median(a) / median(b)`` and its percentile bootstrap CI, ``a`` and
  ``b`` resampled independently (each with its own groups).  Speed-up of B over A:
  ``ratio_ci(samples_of_baseline, samples_of_model)``.
- :func:`paired_ratio_ci`  the same ratio for samples taken in pairs (a sweep's
  ``interleave_calls``: sample ``i`` of both sides in one cycle of calls, group ``g`` of both
  in one process): each replicate draws the groups, then the pairs within them, with
  replacement, **the same draws for both sides**, so that what the two sides shared (the
  process, the machine's state during a cycle) cancels in the ratio instead of widening it.
- :func:`rows_ratio_ci`  the ratio of two results rows' latencies: paired when
  :func:`paired_rows` says their samples pair, independent otherwise.

Fewer than two samples on a side give no interval (``nan``): one sample says nothing about
its spread, and an empty one nothing at all.  The variance these intervals describe is the
timing jitter of one configuration and one seed (one build of the model); seed-to-seed
variance of accuracy is a different quantity (:mod:`elastic_bench.report.significance`).

Example::

    >>> samples, groups = parse_samples("10.1;10.3;9.9|10.8;10.6;10.7")
    >>> groups.tolist()
    [0, 0, 0, 1, 1, 1]
    >>> lo, hi = median_ci(samples, groups)                 # cluster bootstrap over 2 repeats
    >>> ratio, lo, hi = ratio_ci([20.0, 21.0, 19.5], [10.0, 10.2, 9.8])   # ≈ ×2 speed-up
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

LEVEL = 0.95
N_BOOT = 2000


def parse_samples(text: object) -> tuple[np.ndarray, np.ndarray]:
    """``(samples, groups)`` from a ``latency_samples_ms`` cell: float ms and one int group id
    (the repeat's index) per sample.  Empty, missing (NaN/None) or blank text gives two empty
    arrays; a malformed number is a ``ValueError`` naming it."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return np.empty(0), np.empty(0, dtype=int)
    samples: list[float] = []
    groups: list[int] = []
    gid = 0
    for part in str(text).strip().split("|"):
        vals = [v.strip() for v in part.split(";") if v.strip()]
        if not vals:
            continue
        for v in vals:
            try:
                samples.append(float(v))
            except ValueError:
                raise ValueError(f"latency_samples_ms: {v!r} is not a number; accepted: ms values separated by ';' and '|'") from None
            groups.append(gid)
        gid += 1
    return np.asarray(samples, dtype=float), np.asarray(groups, dtype=int)


def _clean(samples: Sequence[float] | np.ndarray, groups: Sequence[int] | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(samples, dtype=float).ravel()
    g = np.zeros(len(x), dtype=int) if groups is None or len(groups) == 0 else np.asarray(groups).ravel()
    if len(g) != len(x):
        raise ValueError(f"groups has {len(g)} entries for {len(x)} samples")
    keep = np.isfinite(x)
    return x[keep], g[keep]


def _boot_medians(x: np.ndarray, g: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the median (cluster bootstrap when several groups)."""
    ids = np.unique(g)
    if len(ids) <= 1:
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        return np.median(x[idx], axis=1)
    members = [x[g == i] for i in ids]
    sizes = {len(m) for m in members}
    if len(sizes) == 1:  # equal repeats: one vectorised draw
        n = sizes.pop()
        mat = np.stack(members)  # [G, n]
        pick_g = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        pick_s = rng.integers(0, n, size=(n_boot, len(ids), n))
        return np.median(mat[pick_g[..., None], pick_s].reshape(n_boot, -1), axis=1)
    out = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(ids), size=len(ids))
        draw = [members[c][rng.integers(0, len(members[c]), size=len(members[c]))] for c in chosen]
        out[b] = np.median(np.concatenate(draw))
    return out


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def median_ci(
    samples: Sequence[float] | np.ndarray,
    groups: Sequence[int] | np.ndarray | None = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` of the median (module docstring); ``(nan, nan)`` with
    fewer than two finite samples."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, g = _clean(samples, groups)
    if len(x) < 2:
        return math.nan, math.nan
    reps = _boot_medians(x, g, n_boot, np.random.default_rng(seed))
    return _percentiles(reps, level)


def ratio_ci(
    samples_a: Sequence[float] | np.ndarray,
    samples_b: Sequence[float] | np.ndarray,
    groups_a: Sequence[int] | np.ndarray | None = None,
    groups_b: Sequence[int] | np.ndarray | None = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(median(a) / median(b), lo, hi)``: the ratio of medians and its percentile bootstrap
    CI, a and b resampled independently.  The ratio is ``nan`` when a side is empty; the
    interval is ``nan`` when a side has fewer than two samples."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, ga = _clean(samples_a, groups_a)
    b, gb = _clean(samples_b, groups_b)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2 or len(b) < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ra = _boot_medians(a, ga, n_boot, rng)
    rb = _boot_medians(b, gb, n_boot, rng)
    lo, hi = _percentiles(ra / rb, level)
    return ratio, lo, hi


def paired_ratio_ci(
    samples_a: Sequence[float] | np.ndarray,
    samples_b: Sequence[float] | np.ndarray,
    groups: Sequence[int] | np.ndarray | None = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(median(a) / median(b), lo, hi)`` for paired samples (``a[i]`` with ``b[i]``, both in
    group ``groups[i]``): the module docstring's paired cluster bootstrap.  A pair with a
    non-finite side is dropped; ``nan`` as in :func:`ratio_ci`."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = np.asarray(samples_a, dtype=float).ravel()
    b = np.asarray(samples_b, dtype=float).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    g = np.zeros(len(a), dtype=int) if groups is None or len(groups) == 0 else np.asarray(groups).ravel()
    if len(g) != len(a):
        raise ValueError(f"groups has {len(g)} entries for {len(a)} pairs")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b, g = a[keep], b[keep], g[keep]
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ids = np.unique(g)
    members = [np.flatnonzero(g == i) for i in ids]
    ra, rb = np.empty(n_boot), np.empty(n_boot)
    for k in range(n_boot):
        chosen = rng.integers(0, len(ids), size=len(ids)) if len(ids) > 1 else np.zeros(1, dtype=int)
        idx = np.concatenate([members[c][rng.integers(0, len(members[c]), size=len(members[c]))] for c in chosen])
        ra[k], rb[k] = np.median(a[idx]), np.median(b[idx])
    lo, hi = _percentiles(ra / rb, level)
    return ratio, lo, hi


INTERLEAVED_MODE = "+interleaved"  # the timer-mode suffix of rows timed call by call together (measure.timer)


def paired_rows(row_a: Any, row_b: Any) -> bool:
    """Whether two results rows' samples pair one to one: both timed call by call together
    (``timer_mode`` ending ``+interleaved``) in the same rounds, with the same members in each
    (``timing_group`` equal and set for every round: run, round, members), and the same number
    of samples in every round."""
    get_a, get_b = _getter(row_a), _getter(row_b)
    modes = (str(get_a("timer_mode") or ""), str(get_b("timer_mode") or ""))
    if not all(m.endswith(INTERLEAVED_MODE) and not m.startswith("mixed:") for m in modes):
        return False
    tokens = str(get_a("timing_group") or "")
    if tokens != str(get_b("timing_group") or "") or not all(tokens.split("|")):
        return False
    _, ga = parse_samples(get_a("latency_samples_ms"))
    _, gb = parse_samples(get_b("latency_samples_ms"))
    return len(ga) > 0 and len(set(ga.tolist())) == len(tokens.split("|")) and np.array_equal(ga, gb)


def rows_ratio_ci(num_row: Any, den_row: Any, seed: int = 0) -> tuple[float, float, float, bool]:
    """``(ratio, lo, hi, paired)``: the median latency of ``num_row`` over ``den_row``'s, from
    their ``latency_samples_ms`` (the rows' ``latency_ms_p50`` when a side has no samples, with
    no interval), by :func:`paired_ratio_ci` when :func:`paired_rows`, else :func:`ratio_ci`."""
    get_n, get_d = _getter(num_row), _getter(den_row)
    a, ga = parse_samples(get_n("latency_samples_ms"))
    b, gb = parse_samples(get_d("latency_samples_ms"))
    if len(a) == 0 or len(b) == 0:
        try:
            return float(get_n("latency_ms_p50")) / float(get_d("latency_ms_p50")), math.nan, math.nan, False
        except (TypeError, ValueError, ZeroDivisionError):
            return math.nan, math.nan, math.nan, False
    if paired_rows(num_row, den_row):
        return (*paired_ratio_ci(a, b, ga, seed=seed), True)
    return (*ratio_ci(a, b, ga, gb, seed=seed), False)


def _getter(row: Any) -> Any:
    """``row.get`` for a mapping or a pandas row; ``None`` for a missing or NaN field."""

    def get(key: str) -> Any:
        v = row.get(key) if hasattr(row, "get") else getattr(row, key, None)
        return None if isinstance(v, float) and math.isnan(v) else v

    return get
