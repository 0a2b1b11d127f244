"""The recommender shell around any attention (ELASTIC_SPEC.md §3).

Same for every backend, so that only the attention differs::

    h = Dropout(√d · ItemEmb(items) + PosEmb(positions)) * mask
    h = Encoder(h, mask)             # L pre-LN blocks of the backend, or its own encoder
    h = LN(h)
    score(u, item) = <h_u, ItemEmb(item)>            # tied output embedding

Sequences are **left-padded** with item id 0, so the most recent item is always at the
last index and the user representation served at inference is ``h[:, -1]``.  Positions
count real items from the oldest one (0, 1, 2, ...), so padding never shifts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import registry, serving
from .layers import Block, StackEncoder


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; frozen and hashable (a results key)."""

    backend: str
    n_items: int
    max_len: int
    d_model: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    ffn_mult: int = 4
    ffn_act: str = "gelu"
    block: str = "pre-ln"  # pre-ln | sasrec: see layers.Block (sasrec: no final LayerNorm, xavier init)
    l2_norm: bool = False  # score with L2-normalised user and item embeddings (cosine)
    causal: bool | None = None  # None: causal when the backend supports it
    options: tuple[tuple[str, Any], ...] = field(default=())  # backend options, sorted pairs

    @staticmethod
    def make(backend: str, n_items: int, max_len: int, options: dict[str, Any] | None = None, **kw: Any) -> "ModelConfig":
        return ModelConfig(backend, n_items, max_len, options=tuple(sorted((options or {}).items())), **kw)

    def resolved_causal(self) -> bool:
        if self.causal is not None:
            return self.causal
        cap = registry.get(self.backend).capabilities
        return cap.causal


class SeqRecModel(nn.Module):
    """Item embeddings + positions -> L blocks of one attention backend -> tied scores."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        backend = registry.get(cfg.backend)
        causal = cfg.resolved_causal()
        self.causal = causal
        options = dict(cfg.options)
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.emb_drop = nn.Dropout(cfg.dropout)
        encoder = backend.build_encoder(
            d_model=cfg.d_model,
            heads=cfg.heads,
            layers=cfg.layers,
            dropout=cfg.dropout,
            causal=causal,
            ffn_mult=cfg.ffn_mult,
            ffn_act=cfg.ffn_act,
            block=cfg.block,
            **backend.resolve_options(options),
        )
        if encoder is None:
            encoder = StackEncoder(
                [
                    Block(backend.build(cfg.d_model, cfg.heads, cfg.dropout, causal, **options), cfg.d_model, cfg.dropout, cfg.ffn_mult, cfg.ffn_act, cfg.block)
                    for _ in range(cfg.layers)
                ]
            )
        self.encoder = encoder
        # SASRec's block ends in a LayerNorm already; the reference adds no final one
        self.final_ln = nn.Identity() if cfg.block == "sasrec" else nn.LayerNorm(cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # small item embeddings (x √d on input: ~0.14 per dim, as the positions): Adam's
        # fixed-size steps then move them quickly, which matters most for cosine scores
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.trunc_normal_(self.pos_emb.weight, std=1.0 / math.sqrt(self.cfg.d_model))
        if self.cfg.block == "sasrec":
            # the reference initialises every weight matrix of its blocks xavier-normal
            # (a memory bank or static dispatchers outside the blocks keep their own init)
            for blk in self.encoder.modules():
                if isinstance(blk, Block):
                    for p in blk.parameters():
                        if p.dim() >= 2:
                            nn.init.xavier_normal_(p)

    @property
    def backend_detail(self) -> str:
        return getattr(self.encoder, "backend_detail", self.cfg.backend)

    def embed(self, items: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(input h, mask, raw item embeddings) for left-padded ``items [B, N]``."""
        if items.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {items.shape[1]} > max_len {self.cfg.max_len}")
        mask = items != 0
        pos = (mask.long().cumsum(1) - 1).clamp_min(0)
        e = self.item_emb(items)
        h = e * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        h = self.emb_drop(h) * mask.unsqueeze(-1).to(h.dtype)
        return h, mask, e

    def forward(self, items: Tensor) -> Tensor:
        """Hidden states ``[B, N, D]`` of left-padded item ids ``[B, N]``."""
        h, mask, e = self.embed(items)
        h = self.encoder(h, mask, e)
        return self.final_ln(h)

    def user_repr(self, items: Tensor) -> Tensor:
        """The representation at the last (most recent) position, from the full forward (every
        position in every layer: the ``infer`` pass's throughput regime)."""
        return self.forward(items)[:, -1]

    def serve(self, items: Tensor) -> Tensor:
        """The same representation computed as a server would: the last query only in the last
        layer (:func:`elastic_bench.serving.serve`)."""
        return serving.serve(self, items)

    def init_serving(self, items: Tensor) -> serving.ServingState:
        """The per-user serving state after the history ``items`` (:func:`elastic_bench.serving.init_state`)."""
        return serving.init_state(self, items)

    def serve_step(self, state: serving.ServingState, new_items: Tensor) -> tuple[Tensor, serving.ServingState]:
        """Append one item per user and return the new representation (:func:`elastic_bench.serving.step`)."""
        return serving.step(self, state, new_items)

    def output_embeddings(self) -> Tensor:
        """The item embeddings scores are taken against (L2-normalised when ``cfg.l2_norm``)."""
        w = self.item_emb.weight
        return F.normalize(w, dim=-1, eps=1e-6) if self.cfg.l2_norm else w

    def score_queries(self, h: Tensor) -> Tensor:
        """User representations as scored (L2-normalised when ``cfg.l2_norm``)."""
        return F.normalize(h, dim=-1, eps=1e-6) if self.cfg.l2_norm else h

    def scores(self, h: Tensor) -> Tensor:
        """Tied scores against every item (column 0 is padding and should be ignored)."""
        return self.score_queries(h) @ self.output_embeddings().t()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
