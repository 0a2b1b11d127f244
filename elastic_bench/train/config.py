"""The training configuration: one frozen, hashable dataclass (the results key and the manifest)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {"block": "pre-ln", "causal": None}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run.  ``options`` are the backend's own
    (experts, memory_size, topk, ...), as sorted ``(name, value)`` pairs."""

    model: str = "softmax"
    data: str = "synthetic"  # a named dataset, a file path, or synthetic[:key=value,...]
    fmt: str = "auto"
    max_len: int = 200
    # model
    d_model: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    ffn_mult: int = 4
    ffn_act: str = "gelu"
    block: str = "pre-ln"  # pre-ln | sasrec (layers.Block)
    causal: bool | None = None  # None: causal when the backend supports it; False: a causal backend run bidirectionally (objective last)
    l2_norm: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    # objective and loss
    objective: str = "auto"  # auto: all for causal models, last otherwise
    loss: str = "full"  # full | sampled
    negatives: int = 128
    temperature: float = 1.0
    negatives_per: str = "sequence"  # sampled loss: negatives drawn per sequence or per position
    last_cuts: int = 1  # objective last: random prefixes per user per epoch (plus the full prefix)
    # optimisation
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    warmup_steps: int = 0
    clip: float = 1.0
    epochs: int = 100
    patience: int = 10  # evaluations without a better validation NDCG@10 before stopping
    max_minutes: float = 0.0  # wall-clock budget of the run, resumed segments included (0 = none): stop after the epoch that crosses it
    # evaluation
    eval: str = "full"
    eval_every: int = 1
    eval_batch: int = 256
    exclude_history: str = "none"  # none | input (the model's input window) | all (the whole history)
    train_on_valid: bool = False  # reproduction mode: train on s[:-1] and report test at the final epoch
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU

    def with_options(self, **kw: Any) -> "TrainConfig":
        return replace(self, options=tuple(sorted({**dict(self.options), **kw}.items())))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    def _hashed(self) -> dict[str, Any]:
        # fields added after results were first recorded leave the hash unchanged at their
        # default, so existing results stores and checkpoints keep resuming
        d = self.to_dict()
        for k, default in HASH_NEUTRAL_DEFAULTS.items():
            if d.get(k) == default:
                d.pop(k)
        return d

    def causal_for(self, backend_causal: bool) -> bool:
        """The causality this cell runs with: the one asked for, else the backend's default."""
        return self.causal if self.causal is not None else backend_causal

    def causality_shown(self) -> list[str]:
        """``["causal=False"]`` (or True) when a causality was asked for, else ``[]``: shown beside
        the options wherever a cell is named, so a non-causal run never reads as the default one."""
        return [f"causal={self.causal}"] if self.causal is not None else []

    def config_hash(self) -> str:
        """Stable hash of what defines the run's result (not where it runs)."""
        d = self._hashed()
        d.pop("device")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def checkpoint_key(self) -> str:
        """What a checkpoint must share to be resumed: everything but the stopping rules
        (so a finished run can be extended with more epochs) and the device."""
        d = self._hashed()
        for k in ("device", "epochs", "patience", "max_minutes"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @staticmethod
    def field_names() -> list[str]:
        return [f.name for f in fields(TrainConfig)]


def config_from_mapping(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with ``values`` applied; backend options (experts, memory_size, ...) go to ``options``."""
    names = set(TrainConfig.field_names())
    direct = {k: v for k, v in values.items() if k in names and k != "options"}
    extra = {k: v for k, v in values.items() if k not in names}
    cfg = replace(base, **direct)
    opts = {**dict(base.options), **dict(values.get("options", {})), **extra}
    return replace(cfg, options=tuple(sorted(opts.items())))
