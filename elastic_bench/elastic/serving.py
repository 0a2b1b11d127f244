"""Serving paths of the LDA layer: the last position alone, and the causal running state.

**Last position** (:func:`lda_forward_last`, the ``serve`` pass's last layer).  The pack step
reads every real token (ELASTIC's cost is there: O(N·k·d)), the unpack step runs for the last
query only (O(k·d) instead of O(N·k·d)):

- ``elastic`` (non-causal)::

      P' = P + o1(pack(P, X));  P' <- P' + FFN(LN(P'));  X'_N = o2(unpack(q2(X_N), LN_u(P')))

- ``elastic-causal``: the last position packs the real positions ≤ N, i.e. all of them, so its
  dispatchers are the non-causal pack's, used as the causal layer uses them (no LayerNorm, no
  FFN: :mod:`.lda`)::

      P_N = P + o1(pack(P, X));  X'_N = o2(softmax(q2(X_N) k2(P_N)ᵀ / √d_h) v2(P_N))

**Running state** (:func:`lda_init_state`, :func:`lda_step`, the ``serve_step`` pass of
``elastic-causal``).  Per layer, user, head and dispatcher j, the online-softmax statistics of
the cumulative pack (:mod:`.causal` carries the same ones from chunk to chunk)::

    m_j = max_{s≤t} S_sj,    l_j = Σ_{s≤t} e^{S_sj - m_j},    acc_j = Σ_{s≤t} e^{S_sj - m_j} v1_s
    S_sj = (q1_j / √d_h) · k1_s                                        (padding: no term)

One appended position t+1 with score S and value v1::

    m' = max(m, S);  l' = l·e^{m - m'} + e^{S - m'};  acc' = acc·e^{m - m'} + e^{S - m'} v1
    pack_{t+1} = acc' / l';  P_{t+1} = P + o1(pack_{t+1});  X'_{t+1} = unpack(q2(X_{t+1}), P_{t+1})

O(k·d_h) state per head (h·k·(d_h + 2) numbers per layer and user) and O(k·d²) work per layer
and step, flat in the history length N.  A user with no real item yet has m = -inf, l = 0,
acc = 0 (e^{-inf} = 0 absorbs it).  The dispatchers P and their pack queries are the same for
every user (static: ``elastic-causal`` has no IMR); they are model constants, kept beside the
state (:class:`LDAConstants`) and not counted as per-user state.

The oracles are the full forward's last position (``naive.lda_reference`` and the chunked scan)
and, for a step, a fresh ``serve`` on the longer history: ``tests/test_serving.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .lda import LDALayer, merge_heads, pack, unpack

NEG = float("-inf")


@dataclass(frozen=True)
class LDAState:
    """One causal LDA layer's per-user running state: ``m, l [B, h, k]``, ``acc [B, h, k, d_h]``."""

    m: Tensor
    l: Tensor
    acc: Tensor


@dataclass(frozen=True)
class LDAConstants:
    """Per-layer model constants of a step: the dispatchers ``p [1|B, k, d]`` and their scaled pack
    queries ``q1 [1|B, h, k, d_h]`` (the same for every user with static dispatchers)."""

    p: Tensor
    q1: Tensor


def lda_forward_last(layer: LDALayer, xn: Tensor, mask: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """``(X'_N [B, 1, D], P_next)``: the layer's output at the last index only (module docstring)."""
    q1, k1, v1 = layer.q1(layer.ln_pack(p)), layer.k1(xn), layer.v1(xn)
    packed = merge_heads(pack(q1, k1, v1, mask))
    q2 = layer.q2(xn[:, -1:])
    if layer.causal:
        pt = p + layer.o1(packed)
        out = unpack(q2, layer.k2(pt), layer.v2(pt))
        p_next = p + layer.ffn(layer.ln_ffn(p))
        layer.backend_detail = "torch:sdpa(last-query, causal)"
    else:
        p_next = p + layer.o1(packed)
        p_next = p_next + layer.ffn(layer.ln_ffn(p_next))
        pn = layer.ln_unpack(p_next)
        out = unpack(q2, layer.k2(pn), layer.v2(pn))
        layer.backend_detail = "torch:sdpa(last-query)"
    return layer.o2(merge_heads(out)), p_next


def lda_constants(layer: LDALayer, p: Tensor) -> LDAConstants:
    return LDAConstants(p, layer.q1(layer.ln_pack(p)) / math.sqrt(layer.head_dim))


def lda_init_state(layer: LDALayer, xn: Tensor, mask: Tensor, p: Tensor) -> tuple[LDAState, LDAConstants]:
    """The running state after the history ``xn [B, N, D]`` (causal layers only)."""
    if not layer.causal:
        raise ValueError("only a causal LDA layer has a running state (non-causal ELASTIC recomputes)")
    c = lda_constants(layer, p)
    s = c.q1.expand(xn.shape[0], -1, -1, -1) @ layer.k1(xn).transpose(-1, -2)  # [B, h, k, N]
    s = s.masked_fill(~mask[:, None, None, :], NEG)
    m = s.amax(-1)
    ref = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - ref[..., None])  # 0 at padding
    return LDAState(m, e.sum(-1), e @ layer.v1(xn)), c


def lda_step(layer: LDALayer, state: LDAState, c: LDAConstants, xn_new: Tensor) -> tuple[Tensor, LDAState]:
    """``(X'_{t+1} [B, 1, D], new state)`` for one appended real position ``xn_new [B, 1, D]``."""
    k1, v1 = layer.k1(xn_new), layer.v1(xn_new)  # [B, h, 1, d_h]
    s = (c.q1 @ k1.transpose(-1, -2))[..., 0]  # [B, h, k]
    m = torch.maximum(state.m, s)
    old = torch.exp(state.m - m)  # 0 where nothing was real
    new = torch.exp(s - m)
    st = LDAState(m, state.l * old + new, state.acc * old[..., None] + new[..., None] * v1)
    pt = c.p + layer.o1(merge_heads(st.acc / st.l[..., None]))
    out = unpack(layer.q2(xn_new), layer.k2(pt), layer.v2(pt))
    layer.backend_detail = "running-state:lda"
    return layer.o2(merge_heads(out)), st
