"""The four benchmark passes, at the model level or the op level, for one :class:`Cell`.

Passes (each a separate metric):

- ``infer``       ``torch.inference_mode()``, eval mode; model level: ``model.user_repr(items)``
                  (the last position, as served); op level: ``module(x, mask)``.
- ``fwd``         the same forward with autograd on (train mode; the graph is then dropped).
- ``fwd_bwd``     forward, loss, backward (one timed call).
- ``train_step``  forward, loss, backward and an AdamW step.

Precision, as people run each regime: ``infer`` casts the weights to the cell's dtype (a
served model); the autograd passes (``fwd``, ``fwd_bwd``, ``train_step``) keep fp32 weights
(and AdamW state) and run under ``torch.autocast`` in the cell's dtype when it is 16-bit, as
the trainer does (mixed precision).  :func:`precision` names the regime; it is written to the
row's ``precision`` column.  Dropout is the cell's (``--dropout auto``: the training presets'
0.2 in backward passes, see :data:`~elastic_bench.bench.cells.TRAIN_DROPOUT`).

Model level: the whole :class:`~elastic_bench.recommender.SeqRecModel` with the cell's
backend; the loss is :func:`elastic_bench.losses.next_item_loss` (full softmax over the
catalogue) with the cell's objective.  Op level: the attention module alone on
``x [B, N, D]`` and a key-padding mask; its "loss" is ``sum(y * g)`` for a fixed random ``g``
(an upstream gradient).  Inputs are left-padded: ``padding = "full"`` uses full-length
sequences, ``"random"`` draws each length uniformly from 1..N (seeded).

Example::

    >>> w = build_workload(cell, torch.device("cpu"))
    >>> w.run()                     # one pass
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import registry
from ..attention import DTYPE_NAMES
from ..losses import next_item_loss
from ..recommender import ModelConfig, SeqRecModel
from .cells import Cell

HALF = (torch.float16, torch.bfloat16)
AUTOGRAD_PASSES = ("fwd", "fwd_bwd", "train_step")


def mixed_precision(cell: Cell) -> bool:
    """fp32 weights + autocast: an autograd pass in a 16-bit dtype."""
    return cell.pass_ in AUTOGRAD_PASSES and DTYPE_NAMES[cell.dtype] in HALF


def precision(cell: Cell) -> str:
    """The row's ``precision``: ``fp32 weights + bf16 autocast`` or ``bf16 weights``."""
    return f"fp32 weights + {cell.dtype} autocast" if mixed_precision(cell) else f"{cell.dtype} weights"


def _autocast(cell: Cell, device: torch.device, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` under autocast in the cell's dtype when the cell runs mixed precision."""
    if not mixed_precision(cell):
        return fn
    dtype = DTYPE_NAMES[cell.dtype]

    def call() -> Any:
        with torch.autocast(device.type, dtype=dtype):
            return fn()

    return call


@dataclass
class Workload:
    """One cell, ready to run: ``run()`` is one pass; ``reset()`` drops gradients (untimed)."""

    run: Callable[[], Any]
    module: nn.Module
    inputs: list[Tensor]
    optimizer: torch.optim.Optimizer | None = None
    forward: Callable[[], Any] | None = None  # a forward-only call (FLOP counting), untimed

    def reset(self) -> None:
        self.module.zero_grad(set_to_none=True)

    def resident(self) -> list[Tensor]:
        """Tensors live between passes (for the CPU memory baseline)."""
        out = list(self.module.parameters()) + list(self.module.buffers()) + list(self.inputs)
        out += [p.grad for p in self.module.parameters() if p.grad is not None]
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                out += [v for v in state.values() if isinstance(v, Tensor)]
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def backend_detail(self) -> str:
        return str(getattr(self.module, "backend_detail", ""))


def lengths(cell: Cell, generator: torch.Generator) -> Tensor:
    if cell.padding == "random":
        return torch.randint(1, cell.seq_len + 1, (cell.batch,), generator=generator)
    return torch.full((cell.batch,), cell.seq_len)


def left_pad_mask(lens: Tensor, n: int) -> Tensor:
    """``mask[b, t]`` True for the last ``lens[b]`` positions."""
    return torch.arange(n)[None, :] >= (n - lens)[:, None]


def model_inputs(cell: Cell, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(items [B,N], targets for 'all' [B,N], targets for 'last' [B]) — left-padded, 0 = pad."""
    n = cell.seq_len
    seq = torch.randint(1, cell.n_items + 1, (cell.batch, n + 1), generator=generator)
    mask = left_pad_mask(lengths(cell, generator), n)
    items = seq[:, :n] * mask
    targets_all = seq[:, 1:] * mask
    return items, targets_all, seq[:, n]


def build_workload(cell: Cell, device: torch.device) -> Workload:
    """Model, inputs and the pass closure of ``cell`` on ``device`` (see the module docstring)."""
    weights = torch.float32 if mixed_precision(cell) else DTYPE_NAMES[cell.dtype]
    g = torch.Generator().manual_seed(cell.seed)
    torch.manual_seed(cell.seed)
    if cell.level == "model":
        work = _model_workload(cell, device, weights, g)
    elif cell.level == "op":
        work = _op_workload(cell, device, weights, g)
    else:
        raise ValueError(f"unknown level {cell.level!r}")
    work.run = _autocast(cell, device, work.run)
    if work.forward is not None:
        work.forward = _autocast(cell, device, work.forward)
    return work


def _model_workload(cell: Cell, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> Workload:
    cfg = ModelConfig.make(
        cell.model,
        cell.n_items,
        cell.seq_len,
        options=dict(cell.options),
        d_model=cell.d_model,
        heads=cell.heads,
        layers=cell.layers,
        dropout=cell.dropout,
        causal=cell.causal,
    )
    model = SeqRecModel(cfg).to(device=device, dtype=dtype)
    items, t_all, t_last = (t.to(device) for t in model_inputs(cell, g))
    targets = t_all if cell.objective == "all" else t_last
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if cell.pass_ == "train_step" else None

    def infer() -> Tensor:
        with torch.inference_mode():
            return model.user_repr(items)

    def fwd() -> Tensor:
        return model(items)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        next_item_loss(model, items, targets, cell.objective, cell.loss).backward()

    def train_step() -> None:
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        next_item_loss(model, items, targets, cell.objective, cell.loss).backward()
        opt.step()

    fns = {"infer": infer, "fwd": fwd, "fwd_bwd": fwd_bwd, "train_step": train_step}
    model.train(cell.pass_ != "infer")
    return Workload(fns[cell.pass_], model, [items, targets], opt, forward=_no_grad(lambda: model(items)))


def _op_workload(cell: Cell, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> Workload:
    backend = registry.get(cell.model)
    module = backend.build(cell.d_model, cell.heads, dropout=cell.dropout, causal=cell.causal, **dict(cell.options))
    module = module.to(device=device, dtype=dtype)
    mask = left_pad_mask(lengths(cell, g), cell.seq_len)
    act = DTYPE_NAMES[cell.dtype]  # activations arrive in the cell's dtype (under autocast too)
    x = torch.randn(cell.batch, cell.seq_len, cell.d_model, generator=g).to(device=device, dtype=act)
    grad = (torch.randn(cell.batch, cell.seq_len, cell.d_model, generator=g) * mask[..., None]).to(device=device, dtype=act)
    mask = mask.to(device)
    x_req = x.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3) if cell.pass_ == "train_step" else None

    def infer() -> Tensor:
        with torch.inference_mode():
            return module(x, mask)

    def fwd() -> Tensor:
        return module(x_req, mask)

    def fwd_bwd() -> None:
        module.zero_grad(set_to_none=True)
        x_req.grad = None
        (module(x_req, mask) * grad).sum().backward()

    def train_step() -> None:
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        x_req.grad = None
        (module(x_req, mask) * grad).sum().backward()
        opt.step()

    fns = {"infer": infer, "fwd": fwd, "fwd_bwd": fwd_bwd, "train_step": train_step}
    module.train(cell.pass_ != "infer")
    return Workload(fns[cell.pass_], module, [x, x_req, grad, mask], opt, forward=_no_grad(lambda: module(x, mask)))


def _no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return fn()

    return call
