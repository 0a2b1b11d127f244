"""The no-mixing floor: an "attention" that mixes no tokens.

Each position keeps only its own value, projected in and out::

    y_i = W_o (W_v x_i + b_v) + b_o                 (0 at padding positions)

It has the value and output projections every attention here has, sits in the same
recommender (embeddings, blocks, FFNs, final LN, scoring), and reads no other position,
so it is causal and non-causal at once and costs O(N·d²) with no term in N² or N·k.
A mechanism cannot be faster than this at model level without also dropping work the
recommender does around attention: it is the floor the sweeps compare against (what
"close to the limit" means), not a recommender anyone would train for accuracy.

There are no query or key projections (nothing would read them), and no attention
weights to drop out: dropout (training only) acts on the output, as in ``linear``.

Example::

    >>> attn = NoMixingBackend.build(d_model=64, heads=2, causal=True)
    >>> y = attn(torch.randn(2, 10, 64), torch.ones(2, 10, dtype=torch.bool))
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from elastic_bench.attention import Attention, Backend, Capabilities


class NoMixingAttention(Attention):
    """``y = W_o(W_v x)`` per position, zero at padding; the same for ``causal`` True or False."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__(d_model, heads, dropout, causal)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.backend_detail = "no-mixing"

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.out_proj(self.v_proj(x)) * mask[..., None].to(x.dtype)
        return F.dropout(y, self.dropout_p, self.training)

    # ---- serving: every position reads only itself, so the last query and one appended
    # position cost one position's projections, and a user needs no cached state at all

    def forward_last(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> Tensor:
        self.backend_detail = "last-query:no-mixing"
        return self.out_proj(self.v_proj(x[:, -1:])) * mask[:, -1:, None].to(x.dtype)

    def init_state(self, x: Tensor, mask: Tensor, kv: Tensor | None = None) -> tuple:
        return ()  # no per-user state, causal or not: no position reads another

    def step(self, state: tuple, x_new: Tensor, mask: Tensor | None, kv_new: Tensor | None = None) -> tuple[Tensor, tuple]:
        self.backend_detail = "running-state:no-mixing"
        return self.out_proj(self.v_proj(x_new)), state

    def reference(self, x: Tensor, mask: Tensor) -> Tensor:
        """The naive oracle: one position at a time, real positions only, explicit matrix products."""
        out = x.new_zeros(x.shape)
        wv, bv, wo, bo = self.v_proj.weight, self.v_proj.bias, self.out_proj.weight, self.out_proj.bias
        for b, i in mask.nonzero().tolist():
            out[b, i] = wo @ (wv @ x[b, i] + bv) + bo
        return out


class NoMixingBackend(Backend):
    name = "no-mixing"
    summary = "floor: value and output projections per position, no token mixing (what no attention can beat)"
    capabilities = Capabilities()
    module = NoMixingAttention

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int:
        """Token mixing: none, so 0 (the two projections, 4·B·N·d², are seen by the FLOP counter
        like every backend's projections)."""
        return 0
