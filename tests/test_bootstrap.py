"""Bootstrap CIs of a median and of a ratio of medians (elastic_bench.measure.bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elastic_bench.measure.bootstrap import _boot_medians, median_ci, parse_samples, ratio_ci


def _naive_cluster_medians(x, g, n_boot, rng):
    """Reference: the cluster bootstrap written as the definition says, one replicate at a time."""
    ids = np.unique(g)
    out = []
    for _ in range(n_boot):
        draw = []
        for c in rng.integers(0, len(ids), size=len(ids)):
            member = x[g == ids[c]]
            draw.append(member[rng.integers(0, len(member), size=len(member))])
        out.append(np.median(np.concatenate(draw)))
    return np.array(out)


def test_parse_samples_reads_repeats_and_degenerate_text():
    x, g = parse_samples("10.5;11;9.5|12;13")
    assert x.tolist() == [10.5, 11.0, 9.5, 12.0, 13.0] and g.tolist() == [0, 0, 0, 1, 1]
    for empty in ("", "  ", None, float("nan"), "|;|"):
        x, g = parse_samples(empty)
        assert len(x) == 0 and len(g) == 0
    with pytest.raises(ValueError, match="not a number"):
        parse_samples("1.0;abc")


def test_degenerate_inputs_give_no_interval():
    assert all(math.isnan(v) for v in median_ci([]))
    assert all(math.isnan(v) for v in median_ci([3.0]))  # one sample: no spread, no interval
    r, lo, hi = ratio_ci([4.0], [2.0])
    assert r == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in ratio_ci([], [1.0, 2.0]))
    lo, hi = median_ci([5.0, 5.0, 5.0])
    assert lo == hi == 5.0
    with pytest.raises(ValueError):
        median_ci([1.0, 2.0], groups=[0])


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(1)
    true = math.exp(0.0)  # median of lognormal(0, 0.3)
    hits = 0
    trials = 300
    for t in range(trials):
        x = rng.lognormal(0.0, 0.3, size=31)
        lo, hi = median_ci(x, n_boot=1000, seed=t)
        hits += lo <= true <= hi
    assert 0.88 <= hits / trials <= 0.99, hits / trials


def test_ratio_ci_covers_the_true_ratio():
    rng = np.random.default_rng(2)
    hits = 0
    trials = 200
    for t in range(trials):
        a = 2.0 * rng.lognormal(0.0, 0.2, size=25)
        b = rng.lognormal(0.0, 0.2, size=25)
        r, lo, hi = ratio_ci(a, b, n_boot=1000, seed=t)
        assert lo <= r <= hi
        hits += lo <= 2.0 <= hi
    assert 0.88 <= hits / trials <= 0.995, hits / trials


def test_cluster_bootstrap_widens_for_process_to_process_spread():
    """Four repeat processes whose levels differ: resampling the groups must show that spread, which
    an iid bootstrap of the pooled samples hides."""
    rng = np.random.default_rng(3)
    levels = [10.0, 10.6, 9.5, 11.0]
    x = np.concatenate([lv + 0.05 * rng.standard_normal(10) for lv in levels])
    g = np.repeat(np.arange(4), 10)
    iid = median_ci(x)
    cl = median_ci(x, g)
    assert (cl[1] - cl[0]) > 2 * (iid[1] - iid[0])


@pytest.mark.parametrize("sizes", [(8, 8, 8), (5, 9, 7)])
def test_vectorised_cluster_draw_matches_the_naive_reference(sizes):
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(10 + i, 1.0, size=n) for i, n in enumerate(sizes)])
    g = np.repeat(np.arange(len(sizes)), sizes)
    fast = _boot_medians(x, g, 6000, np.random.default_rng(5))
    ref = _naive_cluster_medians(x, g, 6000, np.random.default_rng(6))
    q = [0.025, 0.25, 0.5, 0.75, 0.975]
    assert np.allclose(np.quantile(fast, q), np.quantile(ref, q), atol=0.12), (np.quantile(fast, q), np.quantile(ref, q))


def test_fixed_seed_is_reproducible():
    x = np.arange(20.0)
    assert median_ci(x, seed=7) == median_ci(x, seed=7)
    assert ratio_ci(x + 1, x + 2, seed=7) == ratio_ci(x + 1, x + 2, seed=7)
