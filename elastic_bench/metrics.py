"""Ranking metrics of next-item prediction: HR, NDCG and MRR at K.

``rank`` is the 0-based position of the target in the ranking: the number of
candidates scored strictly higher than it (ties count in the target's favour, the
usual convention).  For one target per user:

    HR@K   = 1[rank < K]
    NDCG@K = 1[rank < K] / log2(rank + 2)
    MRR@K  = 1[rank < K] / (rank + 1)

Example: a target ranked first gives HR = NDCG = MRR = 1; ranked third (rank 2),
HR@10 = 1, NDCG@10 = 1/log2(4) = 0.5, MRR@10 = 1/3.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

DEFAULT_KS = (10, 50, 200)
METRICS = ("hr", "ndcg", "mrr")


def target_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of ``targets [B]`` among ``scores [B, C]`` (columns = candidate ids)."""
    target_scores = scores.gather(1, targets[:, None])
    above = ~(scores <= target_scores)  # higher, or NaN on either side: a NaN target ranks last, never first
    above.scatter_(1, targets[:, None], False)  # the target never outranks itself
    return above.sum(1)


def metrics_from_ranks(ranks: np.ndarray | Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR / NDCG / MRR at every K of 0-based ``ranks``."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    out: dict[str, float] = {}
    if r.numel() == 0:
        return {f"{m}@{k}": math.nan for k in ks for m in METRICS}
    for k in ks:
        hit = (r < k).double()
        out[f"hr@{k}"] = hit.mean().item()
        out[f"ndcg@{k}"] = (hit / torch.log2(r + 2)).mean().item()
        out[f"mrr@{k}"] = (hit / (r + 1)).mean().item()
    return out
