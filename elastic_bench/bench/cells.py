"""The grid of a sweep: one frozen :class:`Cell` per measurement, and its ``config_hash``.

A cell is everything that defines one measurement (model, backend options, pass, dtype,
shape, device...) and nothing about when or by whom it ran, so its hash is a stable key:
a sweep skips the cells whose hash is already in its output (resumption).

Backend option axes are generic: an axis named ``X`` (``--experts``, ``--memory-size``,
``--topk``, or any ``--option X=...``) is crossed only with the backends whose
``capabilities.options`` declare ``X``; every other backend gets one cell.

Example::

    >>> cells = expand(spec)          # spec: a SweepSpec (see elastic_bench.bench.spec)
    >>> cells[0].config_hash()
    '3f1c0a9e5b7d2c41'
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import registry
from .grammar import human_int

if TYPE_CHECKING:  # pragma: no cover
    from .spec import SweepSpec

BACKWARD_PASSES = ("fwd_bwd", "train_step")
# The serving regime (README "Serving"): model level only, serving batch sizes.  Without --batch
# their cells take SERVE_BATCHES, not the tokens-per-batch budget of the throughput passes.
SERVING_PASSES = ("serve", "serve_step")
SERVE_BATCHES = (1,)
# ``--dropout auto``: backward passes time training as people train, with the dropout of the
# training presets (TrainConfig's default and sasrec-ml1m's: 0.2); forward passes run without.
TRAIN_DROPOUT = 0.2
OP_LOSS = "sum(y*g)"  # op level: a fixed random upstream gradient stands in for a loss


@dataclass(frozen=True)
class Cell:
    """One measurement.  ``options`` are the backend's resolved options (declared defaults
    overridden by the swept values), as sorted ``(name, value)`` pairs."""

    level: str
    model: str
    pass_: str
    dtype: str
    device: str
    device_name: str
    batch: int
    seq_len: int
    d_model: int
    heads: int
    layers: int
    n_items: int
    causal: bool
    objective: str
    loss: str
    options: tuple[tuple[str, Any], ...] = ()
    padding: str = "full"
    dropout: float = 0.0
    seed: int = 0
    threads: int = 0  # CPU intra-op threads (0 = torch's default)
    task: str = "efficiency"

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of every field (sorted JSON, SHA-256)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def option(self, name: str, default: Any = "") -> Any:
        return dict(self.options).get(name, default)

    def series(self) -> "Cell":
        """The cell with its shape (seq_len, batch) blanked: one line of a plot."""
        return dataclasses.replace(self, seq_len=0, batch=0)

    def label(self) -> str:
        """Short human label, e.g. ``model infer fp32 softmax (causal) B=16 N=256``."""
        opts = ",".join(f"{k}={_short(v)}" for k, v in self.options)
        obj = f" obj={self.objective}" if self.objective else ""
        causality = "causal" if self.causal else "non-causal"
        return f"{self.level} {self.pass_} {self.dtype} {self.model}{f'[{opts}]' if opts else ''} ({causality}){obj} B={self.batch} N={self.seq_len}"


def _short(v: Any) -> str:
    return human_int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 1024 else str(v)


@dataclass(frozen=True)
class BackendInfo:
    """What the grid needs to know about a model name: its backend class or why it is missing."""

    name: str
    cls: Any | None
    load_error: str | None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.cls.capabilities.options) if self.cls is not None else {}

    @property
    def causal(self) -> bool:
        """Can run causal (a missing backend counts as non-causal, its row says why it is missing)."""
        return bool(self.cls.capabilities.causal) if self.cls is not None else False

    @property
    def non_causal(self) -> bool:
        return bool(getattr(self.cls.capabilities, "non_causal", True)) if self.cls is not None else True

    def causal_modes(self, causality: str = "auto") -> tuple[bool, ...]:
        """The causalities this backend runs under ``--causal`` (``auto``: every one it supports,
        causal first; ``yes``/``no``: that one if supported, else none)."""
        if self.cls is None:
            return (False,)  # one row that says why the backend is missing
        supported = tuple(c for c, ok in ((True, self.causal), (False, self.non_causal)) if ok)
        if causality == "yes":
            return tuple(c for c in supported if c)
        if causality == "no":
            return tuple(c for c in supported if not c)
        return supported or (False,)


def backend_info(name: str) -> BackendInfo:
    try:
        return BackendInfo(name, registry.get(name), None)
    except KeyError as exc:
        return BackendInfo(name, None, str(exc.args[0]) if exc.args else str(exc))


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


def batches_for(spec: "SweepSpec", seq_len: int, pass_: str = "") -> list[int]:
    """``--batch``'s batches; else the serving batches (:data:`SERVE_BATCHES`) for a serving pass,
    and ``tokens // seq_len`` (at least 1) for the others."""
    if spec.batches:
        return list(spec.batches)
    if pass_ in SERVING_PASSES:
        return list(SERVE_BATCHES)
    return list(dict.fromkeys(max(1, t // seq_len) for t in spec.tokens_per_batch))


def expand(spec: "SweepSpec", device_name: str = "") -> list[Cell]:
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
