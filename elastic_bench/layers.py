"""Building blocks shared by every encoder: the feed-forward network and the pre-LN block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import Attention

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class FeedForward(nn.Module):
    """Position-wise FFN: Linear(d, m·d) -> GELU (or ReLU) -> dropout -> Linear(m·d, d)."""

    def __init__(self, d_model: int, mult: int = 4, dropout: float = 0.0, act: str = "gelu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"ffn activation {act!r}; accepted: {', '.join(ACTIVATIONS)}")
        self.net = nn.Sequential(
            nn.Linear(d_model, mult * d_model),
            ACTIVATIONS[act](),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


BLOCK_STYLES = ("pre-ln", "sasrec")


class Block(nn.Module):
    """A transformer block around any attention, in one of two styles.

    ``pre-ln`` (the default; the standard pre-LayerNorm block)::

        x <- x + Dropout(Attn(LN(x), mask));  x <- x + Dropout(FFN(LN(x)));  x <- x * mask

    ``sasrec`` (SASRec's block as the generative-recommenders reference implements it: only
    the queries are normalised, the residual stream continues from the normalised queries,
    and the FFN's residual is taken after the second LayerNorm)::

        q = LN(x);  y = LN(q + Attn(q; keys/values from x, mask));  x <- (y + Dropout(FFN(y))) * mask

    An attention that cannot take keys/values from a second input (see
    :attr:`Attention.accepts_kv_input`) reads them from ``q`` as well.
    """

    def __init__(
        self, attn: Attention, d_model: int, dropout: float = 0.0, ffn_mult: int = 4, ffn_act: str = "gelu", style: str = "pre-ln"
    ):
        super().__init__()
        if style not in BLOCK_STYLES:
            raise ValueError(f"block style {style!r}; accepted: {', '.join(BLOCK_STYLES)}")
        self.style = style
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = attn
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout, ffn_act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q = self.ln1(x)
        if self._kv():
            a = self.attn(q, mask, kv=x)
        else:
            a = self.attn(q, mask)
        return self.finish(x, a, mask, q)

    def _kv(self) -> bool:
        return self.style == "sasrec" and getattr(self.attn, "accepts_kv_input", False)

    # ---- serving (README "Serving"): see StackEncoder.forward_last / init_state / step

    def forward_last(self, x: Tensor, mask: Tensor) -> Tensor:
        """``[B, 1, D]``: this block's output at the last index only (the attention's one query)."""
        q = self.ln1(x)
        a = self.attn.forward_last(q, mask, kv=x if self._kv() else None)
        return self.finish(x[:, -1:], a, mask[:, -1:], q[:, -1:])

    def init_state(self, x: Tensor, mask: Tensor):
        """The attention's incremental state over this block's input ``x`` (None: it has none)."""
        q = self.ln1(x)
        return self.attn.init_state(q, mask, kv=x if self._kv() else None)

    def step(self, state, x_new: Tensor, mask: Tensor | None) -> tuple[Tensor, object]:
        """``(block output [B, 1, D], new state)`` of one appended real position ``x_new [B, 1, D]``."""
        q = self.ln1(x_new)
        a, state = self.attn.step(state, q, mask, kv_new=x_new if self._kv() else None)
        return self.finish(x_new, a, torch.ones(x_new.shape[:2], dtype=torch.bool, device=x_new.device), q), state

    def finish(self, x: Tensor, attn_out: Tensor, mask: Tensor, q: Tensor | None = None) -> Tensor:
        """Everything after the attention: residuals, FFN sub-block, zeroing of padding.

        ``q`` is the normalised attention input ``LN(x)`` (recomputed when not given); the
        ``sasrec`` style continues its residual stream from it.
        """
        if self.style == "sasrec":
            y = self.ln2((self.ln1(x) if q is None else q) + attn_out)
            x = y + self.drop(self.ffn(y))
        else:
            x = x + self.drop(attn_out)
            x = x + self.drop(self.ffn(self.ln2(x)))
        return x * mask.unsqueeze(-1).to(x.dtype)


class StackEncoder(nn.Module):
    """L standard pre-LN blocks; the encoder of every backend without one of its own."""

    def __init__(self, blocks: list[Block]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    @property
    def backend_detail(self) -> str:
        details = sorted({b.attn.backend_detail for b in self.blocks})
        return "+".join(details)

    def forward(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> Tensor:
        for blk in self.blocks:
            h = blk(h, mask)
        return h

    # ---- serving: the recommender's ``serve`` and ``serve_step`` (elastic_bench.serving)

    def forward_last(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> Tensor:
        """``[B, 1, D]``: every position in layers 1..L-1, the last query only in layer L."""
        for blk in self.blocks[:-1]:
            h = blk(h, mask)
        return self.blocks[-1].forward_last(h, mask)

    def init_state(self, h: Tensor, mask: Tensor, item_emb: Tensor | None = None) -> list | None:
        """Per-layer states over the history (built layer by layer from the full forward), or None
        when some layer's attention has no incremental path (the recommender then recomputes)."""
        states = []
        for blk in self.blocks:
            st = blk.init_state(h, mask)
            if st is None:
                return None
            states.append(st)
            h = blk(h, mask)
        return states

    def step(self, states: list, h_new: Tensor, mask: Tensor | None) -> tuple[Tensor, list]:
        """``(output [B, 1, D], new states)`` of one appended position through every layer."""
        out = []
        for blk, st in zip(self.blocks, states):
            h_new, st = blk.step(st, h_new, mask)
            out.append(st)
        return h_new, out

    def state_tensors(self, states: list) -> list[list[Tensor]]:
        """Per layer: the tensors of its state that hold per-user data (at their used length)."""
        return [blk.attn.state_tensors(st) for blk, st in zip(self.blocks, states)]
