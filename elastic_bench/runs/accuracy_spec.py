"""Validate ``elastic-bench sweep --task accuracy`` options into an :class:`AccuracySpec`.

Same grammar as the efficiency sweep (integer axes, perfect-square memory sizes, model
names with suggestions); every problem is a :class:`GrammarError` naming the argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..environment import resolve_device
from ..grammar import GrammarError, parse_float, parse_int_axis, parse_memory_sizes
from ..presets import train_preset
from .accuracy import AccuracySpec
from .spec import parse_option_axes, resolve_models

DEFAULT_MODELS = ("softmax", "elastic", "elastic-causal")


def _one_int(value: Any, arg: str, minimum: int = 1) -> int:
    values = parse_int_axis(str(value), arg, minimum)
    if len(values) != 1:
        raise GrammarError(f"{arg}: one value expected in an accuracy sweep, got {len(values)}")
    return values[0]


def accuracy_spec(
    models: str | None = None,
    experts: str | None = None,
    memory_size: str | None = None,
    topk: str | None = None,
    option: list[str] | None = None,
    seeds: str | None = None,
    max_len: str | None = None,
    d_model: str | None = None,
    heads: str | None = None,
    layers: str | None = None,
    objective: str | None = None,
    dropout: str | None = None,
    device: str | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    out: str | None = None,
    resume: bool | None = None,
    dry_run: bool | None = None,
    plot: bool | None = None,
) -> AccuracySpec:
    try:
        base = train_preset(preset or "quick")
        dev = resolve_device(device or "auto")
    except ValueError as exc:
        raise GrammarError(str(exc)) from None
    changes: dict[str, Any] = {"device": str(dev)}
    if data:
        changes["data"] = data
    if d_model:
        changes["d_model"] = _one_int(d_model, "--d-model")
    if heads:
        changes["heads"] = _one_int(heads, "--heads")
    if layers:
        changes["layers"] = _one_int(layers, "--layers")
    if dropout is not None:
        changes["dropout"] = parse_float(dropout, "--dropout")
    if objective:
        if objective not in ("auto", "all", "last"):
            raise GrammarError(f"--objective {objective}: accepted: auto, all, last")
        changes["objective"] = objective
    if epochs is not None:
        if epochs < 1:
            raise GrammarError(f"--epochs {epochs}: must be at least 1")
        changes["epochs"] = epochs
    base = dataclasses.replace(base, **changes)
    if base.d_model % base.heads:
        raise GrammarError(f"--d-model {base.d_model} is not divisible by --heads {base.heads}")
    names = resolve_models(models or ",".join(DEFAULT_MODELS), dev.type)
    axes: list[tuple[str, tuple[Any, ...]]] = []
    if experts:
        axes.append(("experts", parse_int_axis(experts, "--experts")))
    if memory_size:
        axes.append(("memory_size", parse_memory_sizes(memory_size)))
    if topk:
        axes.append(("topk", parse_int_axis(topk, "--topk")))
    axes += parse_option_axes(option)
    return AccuracySpec(
        base=base,
        models=names,
        seeds=parse_int_axis(str(seeds), "--seeds", minimum=0) if seeds is not None else (0,),
        max_lens=parse_int_axis(max_len, "--max-len") if max_len else (),
        option_axes=tuple(axes),
        data_dir=data_dir,
        out=out or f"results/accuracy-{base.data.split(':')[0]}.csv",
        resume=True if resume is None else resume,
        dry_run=bool(dry_run),
        plot=True if plot is None else plot,
    )
