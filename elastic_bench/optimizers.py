"""The optimisers of a training step, built one way for the trainer and the ``train_step`` pass.

- **AdamW** for the dense parameters, in torch's *fused* implementation wherever torch has that
  kernel for the parameters' device (CPU and CUDA since torch 2.4, which the project requires).
  It is the same update as the default implementation, in one pass over each tensor instead of
  several. On the CPU, torch's default is a for-loop of per-tensor ops, and a memory bank's dense
  update pays for that in full: one AdamW step over a 1m-slot bank (52M parameters) takes 0.715 s
  that way, 0.064 s fused (Amazon Beauty's shape, one thread; the probe is in the closing note of
  issue 15). Where torch has no fused kernel for a parameter (a complex one, another device), the
  default implementation runs, and :func:`implementation` says so.
- **SparseAdam** for an embedding with sparse gradients (ELASTIC's memory bank with
  ``sparse_grad=True``): its update touches only the rows a step looked up.

:func:`implementation` names what ran (``"AdamW fused + SparseAdam"``): the trainer records it for
every epoch. :func:`align_loaded_state` lets a checkpoint written by one implementation resume in
the other (an optimiser's saved ``param_groups`` would otherwise bring their implementation back).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def sparse_embedding_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weights of the embeddings with sparse gradients (a memory bank with ``sparse_grad=True``)."""
    return [m.weight for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse]


def fused_supported(params: list[nn.Parameter]) -> bool:
    """Whether torch's fused AdamW can step every one of ``params``: floating point (not complex),
    on a device with the fused kernels.  Checked here because torch ≥ 2.5 accepts ``fused=True`` at
    construction and refuses unsupported parameters only at the first ``step()``."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError):  # a torch without the helper: the devices torch 2.4 had kernels for
        devices = {"cpu", "cuda"}
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


def adamw(params: Iterable[nn.Parameter], **kw: Any) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel for every parameter, else torch's default.

    The fused kernel assumes a gradient laid out like its parameter (torch 2.13 on the CPU steps wrong
    when their strides differ); backward always produces such gradients, so never assign ``.grad``
    by hand to a parameter this optimiser steps."""
    params = list(params)
    if fused_supported(params):
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except RuntimeError:  # e.g. differentiable=True, which the fused kernel does not support
            pass
    return torch.optim.AdamW(params, **kw)


def build_optimizers(
    module: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0
) -> list[torch.optim.Optimizer]:
    """AdamW for the dense parameters; SparseAdam for the embeddings with sparse gradients."""
    sparse = sparse_embedding_weights(module)
    ids = {id(p) for p in sparse}
    dense = [p for p in module.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [adamw(dense, lr=lr, betas=betas, weight_decay=weight_decay)]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=lr))
    return opts


def implementation(optimizers: Iterable[torch.optim.Optimizer]) -> str:
    """What runs, e.g. ``"AdamW fused"``, ``"AdamW for-loop + SparseAdam"``."""
    return " + ".join(f"AdamW {_adamw_kind(o)}" if isinstance(o, torch.optim.AdamW) else type(o).__name__ for o in optimizers)


def _adamw_kind(o: torch.optim.AdamW) -> str:
    g = o.param_groups[0]
    if g.get("fused"):
        return "fused"
    if g.get("foreach") is None:  # torch's default: foreach where every parameter is on a GPU
        return "foreach" if all(p.device.type in ("cuda", "xpu") for grp in o.param_groups for p in grp["params"]) else "for-loop"
    return "foreach" if g["foreach"] else "for-loop"


def align_loaded_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (an optimiser's ``state_dict``) with this optimiser's implementation flags, so that
    ``load_state_dict`` keeps the implementation that was built (and casts the step counts for it)."""
    groups = []
    for mine, theirs in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        g = dict(theirs)
        for key in ("fused", "foreach"):
            if key in mine:
                g[key] = mine[key]
        groups.append(g)
    return {**saved, "param_groups": groups}


def epochs_implementation(history: Iterable[dict[str, Any]]) -> str:
    """The implementation each epoch of a run's history trained with, in runs of epochs: one name
    when all agree (``"AdamW fused"``), else ``"AdamW for-loop (epochs 1-35); AdamW fused (epochs 36-56)"``
    (a run resumed by a build with another implementation). Epochs recorded before the trainer
    kept this field read ``not recorded``."""
    spans: list[list[Any]] = []  # [name, first epoch, last epoch]
    for i, h in enumerate(history, 1):
        name = h.get("optimizer")
        name = name if isinstance(name, str) and name else "not recorded"  # missing, empty, or NaN from a frame
        epoch = int(h.get("epoch", i))
        if spans and spans[-1][0] == name:
            spans[-1][2] = epoch
        else:
            spans.append([name, epoch, epoch])
    if len(spans) <= 1:
        return spans[0][0] if spans else ""
    return "; ".join(f"{n} (epoch{'s' if a != b else ''} {a}{'' if a == b else f'-{b}'})" for n, a, b in spans)
