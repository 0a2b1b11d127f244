"""When is one configuration *better* than another?  Only when a stated test says so.

Two rules, one per kind of variance, never mixed:

- **Accuracy over seeds** (:data:`RULE`): Welch's two-sided t-test (unequal variances,
  Welch–Satterthwaite degrees of freedom) on the per-seed values, at level
  :data:`ALPHA` = 0.05.  A is better than B when both have at least two seeds, the test
  rejects equal means (p < α), and A's mean is on the better side.  The variance is the
  seed-to-seed variance of the trained model.
- **Latency of one configuration** (:data:`LATENCY_RULE`): the 95 % bootstrap CI of the
  ratio of the two medians, from the raw timing samples (``latency_samples_ms``) of each
  row, excludes 1 (:mod:`elastic_bench.measure.bootstrap`; cluster bootstrap over repeat processes).  The
  variance is the timing jitter of one seed's model.  Without raw samples on both sides
  there is no test, and nothing is called faster (:func:`latency_differs` returns None).

The t distribution's CDF is computed here from the regularised incomplete beta function
(continued fraction, no scipy): :func:`t_sf_two_sided`.

Example::

    >>> better(Stat(0.30, 0.01, 3), Stat(0.25, 0.01, 3))          # t = 6.1, df = 4, p = 0.004
    True
    >>> better(Stat(0.30, 0.03, 3), Stat(0.27, 0.02, 3))          # t = 1.4, p = 0.24
    False
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..measure.bootstrap import LEVEL, parse_samples, ratio_ci

ALPHA = 0.05
RULE = (
    "a value is called better than another only when both have at least two seeds and Welch's two-sided "
    f"t-test on the per-seed values rejects equal means at alpha = {ALPHA:g} (variance: across seeds)"
)
LATENCY_RULE = (
    f"a latency is called lower than another only when the {LEVEL:.0%} bootstrap confidence interval of the ratio "
    "of their medians, from the raw timing samples of each row (cluster bootstrap over repeat processes), excludes 1 "
    "(variance: timing jitter of one seed's model); rows without raw samples are not tested"
)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), 0 ≤ x ≤ 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` (> 0, may be fractional) degrees of freedom."""
    if df <= 0 or t != t:
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def welch_t(a: Stat, b: Stat) -> tuple[float, float, float]:
    """Welch's t statistic, its degrees of freedom and the two-sided p-value for mean(a) ≠ mean(b)
    (``nan`` everywhere when a side has fewer than two values).  Zero spread on both sides: p = 0
    when the means differ, 1 when they are equal."""
    if a.n < 2 or b.n < 2 or a.mean != a.mean or b.mean != b.mean:
        return math.nan, math.nan, math.nan
    va, vb = (a.std or 0.0) ** 2 / a.n, (b.std or 0.0) ** 2 / b.n
    se2 = va + vb
    diff = a.mean - b.mean
    if se2 == 0.0:
        return (math.copysign(math.inf, diff) if diff else 0.0), math.inf, (0.0 if diff else 1.0)
    t = diff / math.sqrt(se2)
    df = se2 * se2 / ((va * va / (a.n - 1) if va else 0.0) + (vb * vb / (b.n - 1) if vb else 0.0))
    return t, df, t_sf_two_sided(t, df)


def separable(a: Stat, b: Stat, alpha: float = ALPHA) -> bool:
    """Welch's test rejects equal means at ``alpha`` (both sides need two seeds)."""
    p = welch_t(a, b)[2]
    return p == p and p < alpha


def better(a: Stat, b: Stat, higher_is_better: bool = True, alpha: float = ALPHA) -> bool:
    """``a`` is better than ``b`` under :data:`RULE`."""
    if not separable(a, b, alpha):
        return False
    return a.mean > b.mean if higher_is_better else a.mean < b.mean


def latency_differs(samples_a: object, samples_b: object, seed: int = 0) -> bool | None:
    """Under :data:`LATENCY_RULE`: True when the medians of two ``latency_samples_ms`` cells differ,
    False when the CI of their ratio contains 1, None when either side lacks two raw samples."""
    a, ga = parse_samples(samples_a)
    b, gb = parse_samples(samples_b)
    _, lo, hi = ratio_ci(a, b, ga, gb, seed=seed)
    if lo != lo or hi != hi:
        return None
    return not (lo <= 1.0 <= hi)
