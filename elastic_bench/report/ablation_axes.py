"""The ablation axes of ELASTIC: what each one sweeps, how its values are written, and how to
read a row's value back from the results CSV (so figures need nothing but the CSV).

=============  ==========================  ==============================  ===================
axis           values (CLI)                swept as                        default models
=============  ==========================  ==============================  ===================
experts        4,8,16,32 (int grammar)     backend option ``experts``      elastic
memory-size    0,1k,4k,...,1m (squares)    backend option ``memory_size``  elastic
topk           4..32 (int grammar)         backend option ``topk``         elastic
layers         1,2,4                       model depth (both engines)      elastic
heads          1,2,4                       attention heads                 elastic
causal         elastic,elastic-causal      the backend itself              elastic,elastic-causal
query-pool     mean,last                   backend option ``query_pool``   elastic
=============  ==========================  ==============================  ===================

Example::

    >>> AXES["memory-size"].parse("0,1k,4k")
    (0, 1024, 4096)
    >>> axis_values(df, "query-pool")          # a Series of 'mean' / 'last' per row
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from ..grammar import GrammarError, parse_int_axis, parse_memory_sizes, parse_name_list
from .compare import _parse_options

CAUSAL_ALIASES = {"elastic": "elastic", "noncausal": "elastic", "false": "elastic", "elastic-causal": "elastic-causal",
                  "causal": "elastic-causal", "true": "elastic-causal"}  # fmt: skip


def _causal(text: str) -> tuple[str, ...]:
    out = []
    for v in str(text).split(","):
        v = v.strip().lower()
        if not v:
            continue
        if v not in CAUSAL_ALIASES:
            raise GrammarError(f"--values {v!r}: accepted for causal: elastic,elastic-causal (or noncausal,causal / false,true)")
        out.append(CAUSAL_ALIASES[v])
    if not out:
        raise GrammarError("--values: empty; accepted for causal: elastic,elastic-causal")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Axis:
    name: str  # CLI spelling
    kind: str  # "option" | "shape" | "model"
    key: str  # option name, TrainConfig/SweepSpec field, or "model"
    parse: Callable[[str], tuple[Any, ...]]
    default_models: tuple[str, ...] = ("elastic",)
    label: str = ""

    @property
    def column(self) -> str:
        """The derived column figures use for this axis' value."""
        return f"axis_{self.key}"


AXES: dict[str, Axis] = {
    "experts": Axis("experts", "option", "experts", lambda t: parse_int_axis(t, "--values"), label="interest experts k"),
    "memory-size": Axis("memory-size", "option", "memory_size", parse_memory_sizes, label="memory bank slots M (0 = static dispatchers)"),
    "topk": Axis("topk", "option", "topk", lambda t: parse_int_axis(t, "--values"), label="IMR top-k per sub-key"),
    "layers": Axis("layers", "shape", "layers", lambda t: parse_int_axis(t, "--values"), label="layers L"),
    "heads": Axis("heads", "shape", "heads", lambda t: parse_int_axis(t, "--values"), label="heads h"),
    "causal": Axis("causal", "model", "model", _causal, ("elastic", "elastic-causal"), label="variant"),
    "query-pool": Axis("query-pool", "option", "query_pool", lambda t: parse_name_list(t, "--values", ("mean", "last")),
                       label="IMR query pooling"),  # fmt: skip
}


def get_axis(name: str) -> Axis:
    key = name.strip().lower().replace("_", "-")
    if key not in AXES:
        raise GrammarError(f"ablate: unknown axis {name!r}; accepted: {', '.join(AXES)}")
    return AXES[key]


def axis_values(df: pd.DataFrame, axis: str | Axis) -> pd.Series:
    """Each row's value on ``axis``, read from the CSV columns (options text for option axes)."""
    ax = axis if isinstance(axis, Axis) else get_axis(axis)
    if ax.kind == "model":
        return df["model"].astype(str)
    if ax.kind == "shape":
        return pd.to_numeric(df[ax.key], errors="coerce")
    opts = [_parse_options(o) for o in df["options"].fillna("").astype(str)]
    raw = pd.Series([o.get(ax.key, "") for o in opts], index=df.index)
    num = pd.to_numeric(raw.replace({"": None, "None": None}), errors="coerce")
    return num if num.notna().sum() == (raw.replace({"None": ""}) != "").sum() and num.notna().any() else raw


def value_label(v: Any) -> str:
    from ..grammar import human_int

    if isinstance(v, float) and v == int(v):
        v = int(v)
    if isinstance(v, int):
        return human_int(v) if v >= 1024 else str(v)
    return str(v)
