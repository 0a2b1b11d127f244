"""When is one configuration *better* than another?  Only when the gap exceeds the seed spread.

The rule (used by the LaTeX tables and stated in their captions)::

    A is better than B  ⇔  n_A ≥ 2, n_B ≥ 2  and  |mean_A − mean_B| > std_A + std_B
                           (in the right direction)

with the sample standard deviation (ddof = 1) over seeds.  It is deliberately conservative
and dependency-free (no scipy): two seed clouds whose ±1 std intervals overlap are "not
separable".  With fewer than two seeds on either side nothing is ever called better, since
no spread is known.  For latencies the timer's p20–p80 half-range stands in for the std and
the number of timed samples for n.

Example::

    >>> better(Stat(0.30, 0.01, 3), Stat(0.25, 0.01, 3))
    True
    >>> better(Stat(0.30, 0.03, 3), Stat(0.27, 0.02, 3))      # gap 0.03 ≤ 0.05
    False
"""

from __future__ import annotations

from dataclasses import dataclass

RULE = (
    "a value is called better than another only when both have at least two seeds and their means "
    "differ by more than the sum of their standard deviations over seeds"
)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int


def separable(a: Stat, b: Stat) -> bool:
    """The two differ by more than their combined spread (and both have a spread)."""
    if a.n < 2 or b.n < 2 or a.mean != a.mean or b.mean != b.mean:
        return False
    return abs(a.mean - b.mean) > (a.std or 0.0) + (b.std or 0.0)


def better(a: Stat, b: Stat, higher_is_better: bool = True) -> bool:
    """``a`` is better than ``b`` under :data:`RULE`."""
    if not separable(a, b):
        return False
    return a.mean > b.mean if higher_is_better else a.mean < b.mean
