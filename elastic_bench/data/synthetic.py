"""A synthetic dataset with learnable structure, for tests and CPU demos.

Each user follows a first-order Markov walk over the catalogue: with probability
``follow`` the next item is one of ``branch`` fixed successors of the current item,
otherwise an item drawn by a Zipf popularity law of exponent ``skew``.  A model that
learns the successor table beats popularity by far, so "learns something" is testable:
a random ranker's HR@10 is 10/n_items.

Lengths: ``fixed:N``, ``uniform:A..B`` or ``lognormal:MEAN`` (clipped to [3, max_len]).
"""

from __future__ import annotations

import numpy as np

from .formats import SequenceDataset


_ACCEPTED = "accepted: fixed:N, uniform:A..B, lognormal:MEAN"


def _lengths(spec: str, n: int, rng: np.random.Generator, max_len: int) -> np.ndarray:
    kind, _, arg = spec.partition(":")
    try:
        if kind == "fixed":
            length = int(arg)
            if length < 1:
                raise ValueError
            out = np.full(n, length)
        elif kind == "uniform":
            lo_s, sep, hi_s = arg.partition("..")
            lo, hi = int(lo_s), int(hi_s)
            if not sep or not 1 <= lo <= hi:
                raise ValueError
            out = rng.integers(lo, hi + 1, size=n)
        elif kind == "lognormal":
            mean = float(arg)
            if not (np.isfinite(mean) and mean > 0):
                raise ValueError
            out = np.round(rng.lognormal(np.log(mean) - 0.5, 1.0, size=n)).astype(np.int64)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"length distribution {spec!r} (N, A <= B and MEAN positive); {_ACCEPTED}") from None
    return np.clip(out, 3, max_len)


def synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    lengths: str = "lognormal:50",
    max_len: int = 10_000,
    skew: float = 1.0,
    follow: float = 0.8,
    branch: int = 3,
    seed: int = 0,
) -> SequenceDataset:
    if n_users < 1 or n_items < 1 or branch < 1 or max_len < 3:
        raise ValueError(f"synthetic: need n_users, n_items, branch >= 1 and max_len >= 3 (got {n_users}, {n_items}, {branch}, {max_len})")
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** skew
    pop /= pop.sum()
    successors = rng.integers(1, n_items + 1, size=(n_items + 1, branch))
    seqs = []
    for length in _lengths(lengths, n_users, rng, max_len):
        s = np.empty(length, dtype=np.int64)
        s[0] = rng.choice(n_items, p=pop) + 1
        jumps = rng.random(length) >= follow
        rand_items = rng.choice(n_items, size=length, p=pop) + 1
        picks = rng.integers(0, branch, size=length)
        for t in range(1, length):
            s[t] = rand_items[t] if jumps[t] else successors[s[t - 1], picks[t]]
        seqs.append(s)
    meta = dict(kind="synthetic", n_users=n_users, lengths=lengths, skew=skew, follow=follow, branch=branch, seed=seed)
    return SequenceDataset(f"synthetic-{n_users}x{n_items}", seqs, n_items, "synthetic", meta)
