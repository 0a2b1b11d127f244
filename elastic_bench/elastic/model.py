"""ELASTIC as an attention module (op level) and as an L-layer encoder (model level).

- :class:`ElasticAttention` is one LDA layer with its own dispatcher source (IMR or
  static): ``forward(LN(X), mask) -> X'``, the shape every backend has, for op-level
  benchmarks and conformance tests.
- :class:`ElasticEncoder` is what the recommender uses: P⁰ from IMR over the input item
  embeddings (or static), then L pre-LN blocks whose attention is an LDA layer, the
  dispatchers carried from layer to layer::

      P⁰ = IMR(item embeddings)          (elastic-causal: static P⁰, ELASTIC_SPEC.md §1)
      for each layer i:
          X', P^{i+1} = LDA_i(LN(X), mask, P^i)
          X <- X + X';  X <- X + FFN(LN(X))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import Attention
from ..layers import Block
from .imr import dispatcher_source
from .lda import LDALayer
from .naive import lda_reference
from .serving import lda_forward_last, lda_init_state, lda_step


class ElasticAttention(Attention):
    """One LDA layer plus its dispatcher source, behind the common attention interface."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        dropout: float = 0.0,
        causal: bool = False,
        experts: int = 32,
        memory_size: int = 65536,
        topk: int | None = None,
        chunk_size: int = 32,
        query_pool: str = "mean",
        sparse_grad: bool = False,
        ffn_mult: int = 4,
    ):
        super().__init__(d_model, heads, dropout, causal)
        # causal: static first-layer dispatchers (retrieval from the whole sequence would leak the future)
        self.source = dispatcher_source(d_model, experts, 0 if causal else memory_size, topk, query_pool, sparse_grad)
        self.layer = LDALayer(d_model, heads, dropout, causal, ffn_mult, chunk_size)

    @property
    def backend_detail(self) -> str:  # the path the layer took on its last call (Triton or PyTorch)
        return self.layer.backend_detail

    @backend_detail.setter
    def backend_detail(self, value: str) -> None:  # Attention.__init__ sets a default; the layer's wins
        pass

    def dispatchers(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.source(x, mask)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.layer(x, mask, self.dispatchers(x, mask))[0]

    def reference(self, x: Tensor, mask: Tensor) -> Tensor:
        ref_source = getattr(self.source, "reference", self.source)
        return lda_reference(self.layer, x, mask, ref_source(x, mask))[0]


class ElasticEncoder(nn.Module):
    """The recommender's encoder for ``elastic`` / ``elastic-causal``: ``forward(h, mask, item_emb)``."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        layers: int,
        dropout: float = 0.0,
        causal: bool = False,
        ffn_mult: int = 4,
        ffn_act: str = "gelu",
        block: str = "pre-ln",
        experts: int = 32,
        memory_size: int = 65536,
        topk: int | None = None,
        chunk_size: int = 32,
        query_pool: str = "mean",
        sparse_grad: bool = False,
    ):
        super().__init__()
        self.causal = causal
        self.source = dispatcher_source(d_model, experts, 0 if causal else memory_size, topk, query_pool, sparse_grad)
        self.blocks = nn.ModuleList(
            Block(LDALayer(d_model, heads, dropout, causal, ffn_mult, chunk_size, ffn_act), d_model, dropout, ffn_mult, ffn_act, block)
            for _ in range(layers)
        )

    @property
    def backend_detail(self) -> str:
        """The paths the layers took on their last call, ``+``-joined when they differ (``serve``:
        full layers, then the last one's one-query path)."""
        return "+".join(dict.fromkeys(b.attn.backend_detail for b in self.blocks)) if len(self.blocks) else "none"

    def forward(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> Tensor:
        p = self.source(h if item_emb is None else item_emb, mask)
        for blk in self.blocks:
            q = blk.ln1(h)
            a, p = blk.attn(q, mask, p)
            h = blk.finish(h, a, mask, q)
        return h

    # ---- serving (elastic_bench.elastic.serving): the recommender's serve / serve_step

    def forward_last(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> Tensor:
        """``[B, 1, D]``: layers 1..L-1 in full, then layer L's full pack and one-query unpack."""
        p = self.source(h if item_emb is None else item_emb, mask)
        for blk in self.blocks[:-1]:
            q = blk.ln1(h)
            a, p = blk.attn(q, mask, p)
            h = blk.finish(h, a, mask, q)
        blk = self.blocks[-1]
        q = blk.ln1(h)
        a, _ = lda_forward_last(blk.attn, q, mask, p)
        return blk.finish(h[:, -1:], a, mask[:, -1:], q[:, -1:])

    def init_state(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> list | None:
        """``elastic-causal``: per layer ``(LDAState, LDAConstants)`` after the history; ``elastic``:
        None (a non-causal model recomputes)."""
        if not self.causal:
            return None
        p = self.source(h if item_emb is None else item_emb, mask)
        states = []
        for blk in self.blocks:
            q = blk.ln1(h)
            states.append(lda_init_state(blk.attn, q, mask, p))
            a, p = blk.attn(q, mask, p)
            h = blk.finish(h, a, mask, q)
        return states

    def step(self, states: list, h_new: Tensor, mask: Tensor | None) -> tuple[Tensor, list]:
        """``(output [B, 1, D], new states)`` of one appended position (``mask`` unused: the state
        already holds only real positions)."""
        ones = torch.ones(h_new.shape[:2], dtype=torch.bool, device=h_new.device)
        out = []
        for blk, (st, c) in zip(self.blocks, states):
            q = blk.ln1(h_new)
            a, st = lda_step(blk.attn, st, c, q)
            h_new = blk.finish(h_new, a, ones, q)
            out.append((st, c))
        return h_new, out

    def state_tensors(self, states: list) -> list[list[Tensor]]:
        """Per layer the per-user tensors ``m, l, acc`` (the constants are shared by every user)."""
        return [[st.m, st.l, st.acc] for st, _ in states]
