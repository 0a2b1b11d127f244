"""Building blocks shared by every encoder: the feed-forward network and the pre-LN block."""

from __future__ import annotations

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


class Block(nn.Module):
    """Pre-LN transformer block around any attention:

        x <- x + Dropout(Attn(LN(x), mask));  x <- x + Dropout(FFN(LN(x)));  x <- x * mask
    """

    def __init__(self, attn: Attention, d_model: int, dropout: float = 0.0, ffn_mult: int = 4, ffn_act: str = "gelu"):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = attn
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_mult, dropout, ffn_act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.finish(x, self.attn(self.ln1(x), mask), mask)

    def finish(self, x: Tensor, attn_out: Tensor, mask: Tensor) -> Tensor:
        """Everything after the attention: residual, FFN sub-block, zeroing of padding."""
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
