"""Naive references of the LDA layer: the oracles the fast paths are tested against.

Written the plain way on purpose: one sequence at a time, over its real tokens only,
every projection applied explicitly (the causal reference builds each position's
dispatchers P_t and their keys/values, which the fast scan never does).  O(N²·k) for
the causal one, so use small N.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .lda import LDALayer


def _heads(t: Tensor, h: int) -> Tensor:
    """[M, d] -> [h, M, d_h]"""
    m, d = t.shape
    return t.view(m, h, d // h).transpose(0, 1)


def _merge(t: Tensor) -> Tensor:
    """[h, M, d_h] -> [M, d]"""
    h, m, dh = t.shape
    return t.transpose(0, 1).reshape(m, h * dh)


def lda_reference(layer: LDALayer, xn: Tensor, mask: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """Reference of ``layer(xn, mask, p)`` (dropout off).  Outputs at padding positions are 0."""
    b, n, d = xn.shape
    h, dh = layer.heads, layer.head_dim
    out = torch.zeros_like(xn)
    p_next = []
    for i in range(b):
        pi = p[i if p.shape[0] > 1 else 0]
        idx = mask[i].nonzero().flatten()
        x_real = xn[i, idx]
        q1 = _heads(layer.q1.linear(layer.ln_pack(pi)), h)
        k1 = _heads(layer.k1.linear(x_real), h)
        v1 = _heads(layer.v1.linear(x_real), h)
        s = q1 @ k1.transpose(-1, -2) / math.sqrt(dh)  # [h, k, n_real]
        q2 = _heads(layer.q2.linear(x_real), h)  # [h, n_real, d_h]
        if not layer.causal:
            packed = torch.softmax(s, -1) @ v1 if idx.numel() else torch.zeros_like(q1)
            pp = pi + layer.o1(_merge(packed))
            pp = pp + layer.ffn(layer.ln_ffn(pp))
            pn = layer.ln_unpack(pp)
            k2, v2 = _heads(layer.k2.linear(pn), h), _heads(layer.v2.linear(pn), h)
            a = torch.softmax(q2 @ k2.transpose(-1, -2) / math.sqrt(dh), -1)
            out[i, idx] = layer.o2(_merge(a @ v2))
            p_next.append(pp)
            continue
        for t in range(idx.numel()):  # position t packs the real tokens up to and including itself
            packed = torch.softmax(s[..., : t + 1], -1) @ v1[:, : t + 1]
            pt = pi + layer.o1(_merge(packed))  # P_t: used without LN or FFN (module docstring)
            k2, v2 = _heads(layer.k2.linear(pt), h), _heads(layer.v2.linear(pt), h)
            a = torch.softmax(q2[:, t : t + 1] @ k2.transpose(-1, -2) / math.sqrt(dh), -1)
            out[i, idx[t]] = layer.o2(_merge(a @ v2))[0]
        p_next.append(pi + layer.ffn(layer.ln_ffn(pi)))
    if layer.causal and p.shape[0] == 1:  # static dispatchers stay static
        return out, p_next[0].unsqueeze(0)
    return out, torch.stack(p_next)
