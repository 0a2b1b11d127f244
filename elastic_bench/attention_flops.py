"""Analytic FLOPs shared by the attention backends' ``attention_flops`` hooks.

Counted as ``torch.utils.flop_counter`` counts: matmul-class work only, 2 FLOPs per
multiply-add, nothing for soft-max, masks or other element-wise ops.  Softmax attention
(METHODOLOGY.md, FLOPs)::

    forward = 4 · H · d_h · Σ_b pairs(L_b)      QKᵀ and PV, one multiply-add per (query, key, d)
    pairs(L) = L²,  or L(L+1)/2 for a kernel that skips the masked half of a causal mask

Example::

    >>> softmax_attention_flops([256, 256], heads=2, head_dim=32, causal=False)
    33554432
    >>> score_pairs(4, causal=True)
    10
"""

from __future__ import annotations

from typing import Iterable, Sequence


def score_pairs(n: int, causal: bool) -> int:
    """Query–key pairs of one length-``n`` sequence: ``n²``, or ``n(n+1)/2`` when causal."""
    return n * (n + 1) // 2 if causal else n * n


def real_lengths(batch: int, seq_len: int, lengths: Sequence[int] | None) -> tuple[int, ...]:
    """``lengths`` as a tuple, or ``batch`` full-length sequences when it is None."""
    return tuple(int(x) for x in lengths) if lengths is not None else (seq_len,) * batch


def softmax_attention_flops(lengths: Iterable[int], heads: int, head_dim: int, causal: bool) -> int:
    """Forward FLOPs of softmax attention over sequences of the given lengths: 4·H·d_h·Σ pairs(L)."""
    return 4 * heads * head_dim * sum(score_pairs(n, causal) for n in lengths)
