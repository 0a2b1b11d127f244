"""The key-padding mask a benchmark workload feeds its attention modules on every call.

The engine prepares the attention modules with it once, before anything is timed
(:func:`elastic_bench.attention.prepare_masks`), so that host-side decisions about padding
(is anything padded? the real lengths, the packing indices) are not synchronisations
inside the timed calls.

- op level: the workload's boolean input ``mask [B, N]``;
- model level: ``items != 0`` of the left-padded item ids ``[B, N]`` (id 0 = padding), the
  mask :meth:`~elastic_bench.recommender.SeqRecModel.embed` computes and hands to every block.

Example::

    >>> prepare_masks(work.module, workload_mask(work))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def workload_mask(work: Any) -> Tensor | None:
    """The mask every call of ``work`` (a :class:`~elastic_bench.measure.passes.Workload`) sees:
    its ``mask`` attribute when it has one, else its first boolean input (op level), else
    ``items != 0`` of its first input (model level); ``None`` when there is none of these."""
    mask = getattr(work, "mask", None)
    if isinstance(mask, Tensor):
        return mask
    for t in work.inputs:
        if isinstance(t, Tensor) and t.dtype == torch.bool:
            return t
    items = work.inputs[0] if work.inputs else None
    if isinstance(items, Tensor) and items.dim() == 2 and not items.is_floating_point():
        return items != 0
    return None
