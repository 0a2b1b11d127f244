"""The stated tests behind "better": Welch's t over seeds, a bootstrap ratio CI over timing samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elastic_bench.report.significance import ALPHA, RULE, Stat, better, betainc, latency_differs, separable, t_sf_two_sided, welch_t


def _t_sf_naive(t: float, df: float) -> float:
    """Reference: 2·∫_|t|^∞ of Student's t density, by Simpson's rule after x = tan(θ)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    a, b = math.atan(abs(t)), math.pi / 2
    n = 20000
    h = (b - a) / n
    total = 0.0
    for i in range(n + 1):
        th = a + i * h
        if i < n:
            x = math.tan(th)
            f = c * (1 + x * x / df) ** (-(df + 1) / 2) / math.cos(th) ** 2
        else:  # the limit at θ = π/2: c·df^((df+1)/2)·cos(θ)^(df-1) -> c for df = 1, 0 for df > 1
            f = c if df == 1 else 0.0
        total += f * (1 if i in (0, n) else (4 if i % 2 else 2))
    return 2 * total * h / 3


@pytest.mark.parametrize("t,df", [(0.3, 1.0), (2.0, 2.5), (1.44, 3.48), (6.12, 4.0), (2.1, 17.3), (0.0, 5.0)])
def test_t_tail_matches_numeric_integration(t, df):
    assert t_sf_two_sided(t, df) == pytest.approx(_t_sf_naive(t, df), abs=1e-6)


def test_t_tail_critical_values_and_beta_edges():
    assert t_sf_two_sided(12.7062, 1) == pytest.approx(0.05, abs=1e-5)
    assert t_sf_two_sided(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert t_sf_two_sided(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)


def test_welch_statistic_and_degrees_of_freedom():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 0.02, 4), rng.normal(0.27, 0.05, 6)
    sa, sb = Stat(a.mean(), a.std(ddof=1), 4), Stat(b.mean(), b.std(ddof=1), 6)
    t, df, p = welch_t(sa, sb)
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 6
    assert t == pytest.approx((a.mean() - b.mean()) / math.sqrt(va + vb))
    assert df == pytest.approx((va + vb) ** 2 / (va**2 / 3 + vb**2 / 5))
    assert p == pytest.approx(t_sf_two_sided(t, df))


def test_welch_replaces_the_std_sum_rule():
    """Two seeds each, gap 0.05 > std_a + std_b = 0.04: the old rule called it better; Welch's
    t = 2.5 on 2 degrees of freedom gives p = 0.13 > 0.05: not separable."""
    a, b = Stat(0.30, 0.02, 2), Stat(0.25, 0.02, 2)
    assert abs(a.mean - b.mean) > a.std + b.std
    assert welch_t(a, b)[2] == pytest.approx(0.1296, abs=1e-3)
    assert not better(a, b) and not separable(a, b)
    assert better(Stat(0.30, 0.01, 3), Stat(0.25, 0.01, 3))
    assert not better(Stat(0.30, 0.0, 1), Stat(0.10, 0.0, 1))  # one seed: untestable
    assert better(Stat(1.0, 0.0, 3), Stat(2.0, 0.0, 3), higher_is_better=False)  # no spread, different means
    assert not separable(Stat(1.0, 0.0, 3), Stat(1.0, 0.0, 3))
    assert "Welch" in RULE and f"{ALPHA:g}" in RULE


def test_latency_test_needs_raw_samples():
    same = ";".join(f"{10 + 0.1 * (i % 5):.2f}" for i in range(20))
    slower = ";".join(f"{12 + 0.1 * (i % 5):.2f}" for i in range(20))
    assert latency_differs(same, slower) is True
    assert latency_differs(same, same) is False
    assert latency_differs("", slower) is None and latency_differs(same, "11.0") is None
