"""Serving a recommender: the user representation now, and after one more interaction.

Two operations, for every backend (README "Serving"):

- :func:`serve` — the representation at the last real position of left-padded ``items [B, N]``,
  computed as a server would: every position in layers 1..L-1, the **last query only** in
  layer L (``Encoder.forward_last``; an encoder without one runs in full and keeps the last
  position).  Equal to ``model(items)[:, -1]``.
- :func:`init_state` + :func:`step` — a per-user state built from the history (untimed in the
  benchmark), then one appended item at a time, each step producing the new representation.
  Equal to a fresh :func:`serve` on the longer history.  The path depends on the encoder:

  ``state``      the encoder's ``init_state`` returned per-layer states (a causal model whose
                 every layer has an incremental path): KV caches (exact softmax attention),
                 running sums (causal ``linear``), running pack statistics (``elastic-causal``);
  ``recompute``  anything else (every non-causal model: one new item changes every position's
                 output; or a causal attention without an incremental path): the state is the
                 item history itself, and a step is :func:`serve` on the history plus the item.

**Layout.**  The history is left-padded as the model reads it; appended items follow it, so a
row's real keys are always its last ``lengths[b]`` columns and the key mask of a state with
``n`` columns is ``arange(n) >= n - lengths`` (derived, not stored).  Positions count real
items: the appended item's position is ``lengths[b]`` (so ``max_len`` must exceed the
longest history plus the steps).  ``padded`` (whether any row has padding, decided once at
:func:`init_state`) lets unpadded batches skip the mask altogether.

**State size** (:func:`state_bytes`): the bytes of the per-user tensors of the state, at their
used length (a KV cache's spare capacity is an allocator policy, not state), per user, per
layer and in total; ``lengths`` (int64) is the one shared per-user tensor of ``state`` mode.
Tensors with batch dimension 1 (model constants such as ELASTIC's static dispatchers) are
the same for every user and are not counted.  Exact formulas (``b`` bytes per element)::

    KV cache        L · 2·N·d · b + 8
    causal linear   L · h·(d_h² + d_h) · b + 8
    elastic-causal  L · h·k·(d_h + 2) · b + 8
    recompute       N · 8                       (the int64 item ids)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ServingState:
    """A batch of users' cached state (see the module docstring)."""

    mode: str  # "state" | "recompute"
    n: int  # columns: history length (padded) plus appended items
    lengths: Tensor  # [B] int64: real items so far
    padded: bool  # some row has padding (decided once, on the host, at init)
    layers: Any = None  # state mode: the encoder's per-layer states
    items: Tensor | None = None  # recompute mode: [B, n] item ids

    def key_mask(self) -> Tensor | None:
        """``[B, n]`` real keys (left padding, then real), or None when nothing is padded."""
        if not self.padded:
            return None
        return torch.arange(self.n, device=self.lengths.device)[None, :] >= (self.n - self.lengths)[:, None]


def serve(model: nn.Module, items: Tensor) -> Tensor:
    """``[B, D]``: the representation at the last index of left-padded ``items [B, N]`` (module docstring)."""
    h, mask, e = model.embed(items)
    last = getattr(model.encoder, "forward_last", None)
    h = last(h, mask, e) if last is not None else model.encoder(h, mask, e)[:, -1:]
    return model.final_ln(h)[:, 0]


def init_state(model: nn.Module, items: Tensor) -> ServingState:
    """The state after the history ``items [B, N]`` (left-padded, 0 = padding)."""
    mask = items != 0
    lengths = mask.sum(1)
    padded = not bool(mask.all())
    init = getattr(model.encoder, "init_state", None)
    layers = None
    if init is not None:
        h, mask, e = model.embed(items)
        layers = init(h, mask, e)
    if layers is None:
        return ServingState("recompute", items.shape[1], lengths, padded, items=items)
    return ServingState("state", items.shape[1], lengths, padded, layers=layers)


def step(model: nn.Module, state: ServingState, new_items: Tensor) -> tuple[Tensor, ServingState]:
    """``(representation [B, D], new state)`` after appending ``new_items [B]`` (real ids ≥ 1)."""
    if state.mode == "recompute":
        items = torch.cat([state.items, new_items[:, None]], dim=1)
        return serve(model, items), replace(state, n=state.n + 1, lengths=state.lengths + 1, items=items)
    if new_items.dim() != 1:
        raise ValueError(f"new_items must be [B], got {tuple(new_items.shape)}")
    pos = state.lengths  # ≤ n: checked on the host only when n could reach max_len
    if state.n >= model.cfg.max_len and bool((pos >= model.cfg.max_len).any()):
        raise ValueError(f"position {int(pos.max())} >= max_len {model.cfg.max_len}")
    e = model.item_emb(new_items[:, None])
    h = e * model.cfg.d_model**0.5 + model.pos_emb(pos[:, None])
    h = model.emb_drop(h)
    longer = replace(state, n=state.n + 1, lengths=state.lengths + 1)
    h, layers = model.encoder.step(state.layers, h, longer.key_mask())
    return model.final_ln(h)[:, 0], replace(longer, layers=layers)


def path(state: ServingState) -> str:
    """``state`` or ``recompute``."""
    return state.mode


def _per_user(t: Tensor, batch: int) -> int:
    """Bytes of ``t`` per user (0 for a tensor shared by all users: batch dimension 1 < batch)."""
    if t.dim() == 0 or (t.shape[0] == 1 and batch > 1):
        return 0
    return t.numel() * t.element_size() // max(1, t.shape[0])


def state_bytes(model: nn.Module, state: ServingState) -> tuple[int, int]:
    """``(bytes per user in total, bytes per user per layer)`` of ``state`` (module docstring).
    Per layer is the mean over layers (all layers hold the same shapes); 0 in recompute mode."""
    batch = int(state.lengths.shape[0])
    if state.mode == "recompute":
        return _per_user(state.items, batch), 0
    per_layer = [sum(_per_user(t, batch) for t in ts) for ts in state_layer_tensors(model, state)]
    total = sum(per_layer) + _per_user(state.lengths, batch)
    return total, (sum(per_layer) // len(per_layer) if per_layer else 0)


def state_layer_tensors(model: nn.Module, state: ServingState) -> list[list[Tensor]]:
    """Per layer, the per-user tensors of a ``state``-mode state (the encoder says which)."""
    fn = getattr(model.encoder, "state_tensors", None)
    if fn is None:
        from .attention import tensors_in

        return [list(tensors_in(st)) for st in state.layers]
    return fn(state.layers)
