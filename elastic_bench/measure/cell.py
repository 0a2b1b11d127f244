"""One measurement: the frozen :class:`Cell` (its ``config_hash`` is the results key) and
:func:`backend_info`, what a cell's model name resolves to.

A cell is everything that defines one measurement (model, backend options, pass, dtype,
shape, device...) and nothing about when or by whom it ran, so its hash is a stable key: a
sweep skips the cells whose hash is already in its output (resumption).  The grid of cells
is :mod:`elastic_bench.runs.grid`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..grammar import human_int

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
