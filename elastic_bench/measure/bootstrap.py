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
from typing import Sequence

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
