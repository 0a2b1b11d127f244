"""Interest Memory Retrieval (IMR) with product keys (ELASTIC_SPEC.md §2).

A memory of M = n² interest slots, each a d-vector, retrieved per user in time
independent of M (Product-Key Memory, Lample et al. 2019)::

    q      = W_q · LN(pool(item embeddings))              pool = masked mean (or last real item)
    q      = [q₁; q₂]                                      two halves of d_q/2
    s₁, s₂ = q₁ K₁ᵀ, q₂ K₂ᵀ                                K₁, K₂ ∈ R^{n × d_q/2}
    top-t of s₁ and of s₂  ->  t×t candidates s₁ᵢ + s₂ⱼ  ->  top k          slot = i·n + j
    P⁰_j   = E_j + g_j · V[slot_j],   g = k · softmax(scores)                 V ∈ R^{M × d}

E (k×d) is a learned per-dispatcher embedding (it is the whole of P⁰ when M = 0), and
g carries the gradient back to the keys.

Routing runs in float32 whatever the input dtype or autocast, as MoE routers do: the
query (pooling, LayerNorm, W_q), the sub-key scores, the top-k and the gate g are computed
in float32 (float64 when the inputs are float64) from the possibly 16-bit parameters and
inputs; only g·V and the sum with E return to the module's dtype.  In bf16 the scores'
rounding (about 4e-3 relative) exceeds the gaps between neighbouring candidates near the
k-th best of 64k slots, so 16-bit routing picks other slots than the same model in
float64 does (about a third of them at the default 64k slots).  When t ≥ k the product-key top-k equals the
brute-force top-k over all n² slots (the best k sums lie within each half's best k).
Cost per user O(n·d_q + t² + k·d): flat in M, while parameters grow as M·d.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels


def slots_to_side(memory_size: int) -> int:
    """n such that n² = memory_size; a ValueError naming the accepted forms otherwise."""
    n = math.isqrt(max(memory_size, 0))
    if memory_size < 0 or n * n != memory_size:
        raise ValueError(
            f"memory_size={memory_size} is not a perfect square; product keys need M = n² "
            "(e.g. 1k = 32², 4k = 64², 16k = 128², 64k = 256², 256k = 512², 1m = 1024²)"
        )
    return n


def pool_items(e: Tensor, mask: Tensor, how: str = "mean") -> Tensor:
    """Masked mean (``mean``) or the most recent real item (``last``) of ``e [B, N, D]``."""
    if how == "mean":
        w = mask.to(e.dtype).unsqueeze(-1)
        return (e * w).sum(1) / w.sum(1).clamp_min(1.0)
    if how == "last":
        idx = (torch.arange(mask.shape[1], device=mask.device) * mask).argmax(1)  # last real index
        return e[torch.arange(e.shape[0], device=e.device), idx] * mask.any(1, keepdim=True).to(e.dtype)
    raise ValueError(f"query_pool={how!r}; accepted: mean, last")


class StaticDispatchers(nn.Module):
    """IMR off (memory_size = 0): P⁰ is a learned k×d matrix, the same for every user."""

    def __init__(self, experts: int, d_model: int):
        super().__init__()
        self.slot_emb = nn.Parameter(torch.randn(experts, d_model) / math.sqrt(d_model))

    def forward(self, e: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return self.slot_emb.unsqueeze(0)  # [1, k, d], broadcast over the batch


class ProductKeyMemory(nn.Module):
    """IMR: ``forward(item_emb [B,N,D], mask [B,N]) -> P⁰ [B, k, D]``."""

    def __init__(
        self,
        d_model: int,
        experts: int,
        memory_size: int,
        topk: int | None = None,
        key_dim: int | None = None,
        query_pool: str = "mean",
        sparse_grad: bool = False,
    ):
        super().__init__()
        self.n = slots_to_side(memory_size)
        self.memory_size = memory_size
        self.experts = experts
        self.topk = topk or experts
        key_dim = key_dim or d_model
        if key_dim % 2:
            raise ValueError(f"key_dim={key_dim} must be even (two product-key halves)")
        if experts > memory_size:
            raise ValueError(f"experts={experts} > memory_size={memory_size}")
        if self.topk > self.n:
            raise ValueError(f"topk={self.topk} > {self.n} sub-keys per half (memory_size={memory_size})")
        if self.topk * self.topk < experts:
            raise ValueError(f"topk²={self.topk ** 2} < experts={experts}: too few candidates")
        if query_pool not in ("mean", "last"):
            raise ValueError(f"query_pool={query_pool!r}; accepted: mean, last")
        self.query_pool = query_pool
        self.half = key_dim // 2
        self.query_ln = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, key_dim)
        self.keys1 = nn.Parameter(torch.randn(self.n, self.half) / math.sqrt(self.half))
        self.keys2 = nn.Parameter(torch.randn(self.n, self.half) / math.sqrt(self.half))
        self.values = nn.Embedding(memory_size, d_model, sparse=sparse_grad)
        nn.init.normal_(self.values.weight, std=1.0 / math.sqrt(d_model))
        self.slot_emb = nn.Parameter(torch.randn(experts, d_model) / math.sqrt(d_model))
        self.backend_detail, self.kernel_reason = "torch:topk", ""  # which retrieval ran last (kernels.decide)

    def query_vector(self, e: Tensor, mask: Tensor) -> Tensor:
        """``q = W_q · LN(pool(e)) [B, d_q]`` in the routing dtype (:func:`route_dtype`), autocast off."""
        dt = route_dtype(e.dtype)
        ln, lin = self.query_ln, self.query
        with _no_autocast(e.device):
            h = pool_items(e.to(dt), mask, self.query_pool)
            h = F.layer_norm(h, ln.normalized_shape, _cast(ln.weight, dt), _cast(ln.bias, dt), ln.eps)
            return F.linear(h, lin.weight.to(dt), _cast(lin.bias, dt))

    def retrieve(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Product-key top-k: ``(scores [B,k], slot indices [B,k])``, best first, in the routing
        dtype (the sub-keys are cast to it, autocast is off)."""
        dt = route_dtype(q.dtype)
        q, keys1, keys2 = q.to(dt), self.keys1.to(dt), self.keys2.to(dt)
        dec = kernels.decide("product-keys", [q, keys1, keys2], experts=self.topk, side=self.n)
        self.backend_detail, self.kernel_reason = ("triton:product-keys" if dec.use_triton else "torch:topk"), dec.reason
        with _no_autocast(q.device):
            if dec.use_triton:  # indices from one kernel; scores re-computed differentiably from them
                return kernels.load("product_keys").product_key_retrieve(q, keys1, keys2, self.topk, self.experts)
            return self._retrieve_torch(q, keys1, keys2)

    def _retrieve_torch(self, q: Tensor, keys1: Tensor, keys2: Tensor) -> tuple[Tensor, Tensor]:
        s1 = q[:, : self.half] @ keys1.t()
        s2 = q[:, self.half :] @ keys2.t()
        v1, i1 = s1.topk(self.topk, dim=-1)
        v2, i2 = s2.topk(self.topk, dim=-1)
        cand = (v1[:, :, None] + v2[:, None, :]).flatten(1)  # [B, t*t]
        scores, best = cand.topk(self.experts, dim=-1)
        idx = i1.gather(1, best // self.topk) * self.n + i2.gather(1, best % self.topk)
        return scores, idx

    def forward(self, e: Tensor, mask: Tensor) -> Tensor:
        scores, idx = self.retrieve(self.query_vector(e, mask))
        with _no_autocast(e.device):
            g = torch.softmax(scores, dim=-1) * self.experts
        v = self.values(idx)
        return self.slot_emb.unsqueeze(0) + g.to(v.dtype).unsqueeze(-1) * v

    def reference(self, e: Tensor, mask: Tensor) -> Tensor:
        """Brute force over all n² slots (the oracle of :meth:`forward`), routed in the same dtype."""
        q = self.query_vector(e, mask)
        keys1, keys2 = self.keys1.to(q.dtype), self.keys2.to(q.dtype)
        full = (q[:, : self.half] @ keys1.t())[:, :, None] + (q[:, self.half :] @ keys2.t())[:, None, :]
        scores, idx = full.flatten(1).topk(self.experts, dim=-1)
        g = torch.softmax(scores, dim=-1) * self.experts
        v = self.values.weight[idx]
        return self.slot_emb.unsqueeze(0) + g.to(v.dtype).unsqueeze(-1) * v


def route_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype IMR routes in: float32 for 16-bit and float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def dispatcher_source(
    d_model: int, experts: int, memory_size: int, topk: int | None, query_pool: str = "mean", sparse_grad: bool = False
) -> nn.Module:
    """IMR when ``memory_size > 0``, else static dispatchers ("w/o IMR")."""
    if experts < 1:
        raise ValueError(f"experts must be >= 1, got {experts}")
    if memory_size == 0:
        return StaticDispatchers(experts, d_model)
    return ProductKeyMemory(d_model, experts, memory_size, topk, query_pool=query_pool, sparse_grad=sparse_grad)
