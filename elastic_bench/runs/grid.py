"""The grid of a sweep: one frozen :class:`~elastic_bench.measure.cell.Cell` per
measurement (:func:`expand`), keyed by its ``config_hash``, so a sweep skips the cells whose
hash is already in its output (resumption).

Backend option axes are generic: an axis named ``X`` (``--experts``, ``--memory-size``,
``--topk``, or any ``--option X=...``) is crossed only with the backends whose
``capabilities.options`` declare ``X``; every other backend gets one cell.

Example::

    >>> cells = expand(spec)          # spec: a SweepSpec (see elastic_bench.runs.spec)
    >>> cells[0].config_hash()
    '3f1c0a9e5b7d2c41'
"""

from __future__ import annotations

import itertools
from typing import Any

from ..measure.cell import (
    BACKWARD_PASSES,
    OP_LOSS,
    SERVE_BATCHES,
    SERVING_PASSES,
    TRAIN_DROPOUT,
    BackendInfo,
    Cell,
    backend_info,
)
from .spec import SweepSpec


def option_combos(info: BackendInfo, option_axes: tuple[tuple[str, tuple[Any, ...]], ...]) -> list[tuple[tuple[str, Any], ...]]:
    """Resolved option tuples of one backend: declared defaults × the axes it declares."""
    declared = info.options
    axes = [(name, values) for name, values in option_axes if name in declared]
    combos = []
    for values in itertools.product(*(v for _, v in axes)) if axes else [()]:
        opts = {**declared, **{name: val for (name, _), val in zip(axes, values)}}
        combos.append(tuple(sorted((k, _freeze(v)) for k, v in opts.items())))
    return combos


def _freeze(v: Any) -> Any:
    """Option values must be hashable (cells are dict keys): lists become tuples."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def objectives_for(pass_: str, level: str, causal: bool, wanted: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(objective, loss)`` pairs of one cell.  Forward-only passes and the op level have no
    objective; ``auto`` = ``all`` and ``last`` for causal models, ``last`` for the others."""
    if pass_ not in BACKWARD_PASSES:
        return [("", "")]
    if level == "op":
        return [("", OP_LOSS)]
    out = []
    for obj in wanted:
        for o in (("all", "last") if obj == "auto" else (obj,)):
            if o == "all" and not causal:
                continue  # 'all' would let a non-causal model read its targets
            if o not in out:
                out.append(o)
    return [(o, "full") for o in out]


def cell_dropout(dropout: float | None, pass_: str) -> float:
    """The dropout of one cell: the given one, or (auto) :data:`TRAIN_DROPOUT` in backward passes."""
    if dropout is not None:
        return dropout
    return TRAIN_DROPOUT if pass_ in BACKWARD_PASSES else 0.0


def batches_for(spec: SweepSpec, seq_len: int, pass_: str = "") -> list[int]:
    """``--batch``'s batches; else the serving batches (:data:`SERVE_BATCHES`) for a serving pass,
    and ``tokens // seq_len`` (at least 1) for the others."""
    if spec.batches:
        return list(spec.batches)
    if pass_ in SERVING_PASSES:
        return list(SERVE_BATCHES)
    return list(dict.fromkeys(max(1, t // seq_len) for t in spec.tokens_per_batch))


def expand(spec: SweepSpec, device_name: str = "") -> list[Cell]:
    """Every cell of ``spec``, in run order (shorter sequences first, so OOMs propagate)."""
    infos = [backend_info(m) for m in spec.models]
    cells: list[Cell] = []
    dev = spec.device_type
    for level, dtype, pass_ in itertools.product(spec.levels, spec.dtypes, spec.passes):
        if level == "op" and pass_ in SERVING_PASSES:
            continue  # a user representation needs the model (the spec notes it)
        for d_model, heads, layers in itertools.product(spec.d_models, spec.heads, spec.layers):
            for seq_len in spec.seq_lens:
                for batch in batches_for(spec, seq_len, pass_):
                    for info in infos:
                        for opts, causal in itertools.product(option_combos(info, spec.option_axes), info.causal_modes(spec.causality)):
                            for objective, loss in objectives_for(pass_, level, causal, spec.objectives):
                                cells.append(
                                    Cell(
                                        level=level,
                                        model=info.name,
                                        pass_=pass_,
                                        dtype=dtype,
                                        device=dev,
                                        device_name=device_name,
                                        batch=batch,
                                        seq_len=seq_len,
                                        d_model=d_model,
                                        heads=heads,
                                        layers=layers if level == "model" else 1,
                                        n_items=spec.n_items if level == "model" else 0,
                                        causal=causal,
                                        objective=objective,
                                        loss=loss,
                                        options=opts,
                                        padding=spec.padding,
                                        dropout=cell_dropout(spec.dropout, pass_),
                                        seed=spec.seed,
                                        threads=spec.threads if dev == "cpu" else 0,
                                    )
                                )
    return list(dict.fromkeys(cells))
