"""The benchmark passes, at the model level or the op level, for one :class:`Cell`.

Passes (each a separate metric):

- ``infer``       ``torch.inference_mode()``, eval mode; model level: ``model.user_repr(items)``:
                  the **throughput regime** (every position in every layer, then the last one
                  kept; large batches: the sweep's tokens-per-batch budget); op level:
                  ``module(x, mask)``.
- ``serve``       the **serving regime** (model level only): ``model.serve(items)``, the last
                  real position computed as a server would, every position in layers 1..L-1
                  and the last query only in layer L (:mod:`elastic_bench.serving`); inference
                  mode; serving batches (``--batch``, default 1: :data:`~.cell.SERVE_BATCHES`).
- ``serve_step``  one appended interaction (model level only): ``model.serve_step(state, item)``
                  from a per-user state built, untimed, from a history of ``seq_len`` items
                  (KV cache, running state, or recompute: ``backend_detail`` names the path, see
                  :func:`serving_detail`).  Every timed call starts from the same state (the
                  step returns a new state and leaves the one it read as it was), so the
                  samples are comparable.  The row also records the state's size
                  (``state_bytes_per_user``, ``state_bytes_per_layer``:
                  :func:`elastic_bench.serving.state_bytes`).
- ``fwd``         the same forward with autograd on (train mode; the graph is then dropped).
- ``fwd_bwd``     forward, loss, backward (one timed call).
- ``train_step``  forward, loss, backward and an AdamW step (SparseAdam for a memory bank with sparse gradients).

Precision, as people run each regime: ``infer``, ``serve`` and ``serve_step`` cast the weights
to the cell's dtype (a served model); the autograd passes (``fwd``, ``fwd_bwd``, ``train_step``) keep fp32 weights
(and AdamW state) and run under ``torch.autocast`` in the cell's dtype when it is 16-bit, as
the trainer does (mixed precision).  :func:`precision` names the regime; it is written to the
row's ``precision`` column.  Dropout is the cell's (``--dropout auto``: the training presets'
0.2 in backward passes, see :data:`~elastic_bench.measure.cell.TRAIN_DROPOUT`).

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
from ..optimizers import build_optimizers, implementation
from ..recommender import ModelConfig, SeqRecModel
from ..serving import ServingState, state_bytes
from .cell import SERVING_PASSES, Cell

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


class StepOptimizer:
    """The optimizer of a ``train_step`` cell, of the trainer's kind
    (:func:`elastic_bench.optimizers.build_optimizers`, with its default betas, no weight decay and
    no clipping): AdamW, fused where torch has the kernel, for the dense parameters and SparseAdam
    for an embedding with sparse gradients (ELASTIC's memory bank with ``sparse_grad=True``), whose
    update touches only the rows a step looked up."""

    def __init__(self, module: nn.Module, lr: float = 1e-3):
        self.optimizers: list[torch.optim.Optimizer] = build_optimizers(module, lr=lr)
        self.implementation = implementation(self.optimizers)

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


@dataclass
class Workload:
    """One cell, ready to run: ``run()`` is one pass; ``reset()`` drops gradients (untimed)."""

    run: Callable[[], Any]
    module: nn.Module
    inputs: list[Tensor]
    optimizer: StepOptimizer | None = None
    forward: Callable[[], Any] | None = None  # a forward-only call (FLOP counting), untimed
    detail: Callable[[], str] | None = None  # the path of the last call, when the module's own does not say it
    fields: dict[str, Any] | None = None  # extra row fields (serve_step: the state's size)

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
        if self.detail is not None:
            return self.detail()
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
    if cell.pass_ in SERVING_PASSES:
        if cell.level != "model":
            raise ValueError(f"pass {cell.pass_} is model-level only")
        work = _serving_workload(cell, device, weights, g)
    elif cell.level == "model":
        work = _model_workload(cell, device, weights, g)
    elif cell.level == "op":
        work = _op_workload(cell, device, weights, g)
    else:
        raise ValueError(f"unknown level {cell.level!r}")
    work.run = _autocast(cell, device, work.run)
    if work.forward is not None:
        work.forward = _autocast(cell, device, work.forward)
    return work


def serving_detail(model: SeqRecModel, state: ServingState) -> str:
    """The path of the last ``serve_step``: the encoder's (``kv-cache:...``, ``running-state:...``)
    in state mode; ``recompute:`` and the ``serve`` path it ran otherwise."""
    detail = str(model.backend_detail)
    return detail if state.mode == "state" else f"recompute:{detail}"


def _serving_workload(cell: Cell, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> Workload:
    """``serve``: ``model.serve(items)``; ``serve_step``: one ``model.serve_step`` from the state of a
    ``seq_len``-item history (positions up to ``seq_len``: ``max_len = seq_len + 1``)."""
    step = cell.pass_ == "serve_step"
    model = SeqRecModel(_model_config(cell, cell.seq_len + (1 if step else 0))).to(device=device, dtype=dtype).eval()
    items = model_inputs(cell, g)[0].to(device)
    if not step:
        def serve() -> Tensor:
            with torch.inference_mode():
                return model.serve(items)

        return Workload(serve, model, [items], forward=serve)
    new = torch.randint(1, cell.n_items + 1, (cell.batch,), generator=g).to(device)
    with torch.inference_mode():
        state = model.init_serving(items)  # untimed: the history is paid once
    total, per_layer = state_bytes(model, state)

    def serve_step() -> Tensor:
        with torch.inference_mode():
            return model.serve_step(state, new)[0]

    state_tensors = [t for t in _state_tensors(state)]
    return Workload(serve_step, model, [items, new, *state_tensors], forward=serve_step, detail=lambda: serving_detail(model, state),
                    fields={"state_bytes_per_user": total, "state_bytes_per_layer": per_layer})  # fmt: skip


def _state_tensors(state: ServingState) -> list[Tensor]:
    from ..attention import tensors_in

    return list(tensors_in(state))


def _model_config(cell: Cell, max_len: int) -> ModelConfig:
    return ModelConfig.make(
        cell.model,
        cell.n_items,
        max_len,
        options=dict(cell.options),
        d_model=cell.d_model,
        heads=cell.heads,
        layers=cell.layers,
        dropout=cell.dropout,
        causal=cell.causal,
    )


def _model_workload(cell: Cell, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> Workload:
    model = SeqRecModel(_model_config(cell, cell.seq_len)).to(device=device, dtype=dtype)
    items, t_all, t_last = (t.to(device) for t in model_inputs(cell, g))
    targets = t_all if cell.objective == "all" else t_last
    opt = StepOptimizer(model) if cell.pass_ == "train_step" else None

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
    opt = StepOptimizer(module) if cell.pass_ == "train_step" else None

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
