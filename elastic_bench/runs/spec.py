"""A sweep's configuration: a frozen :class:`SweepSpec`, built from CLI options and/or a YAML file.

Every option has a device-dependent default (see :data:`CPU_DEFAULTS` / :data:`GPU_DEFAULTS`),
a ``--config sweep.yaml`` file may set any of them (same names, ``-`` or ``_``), and options
given on the command line override the file.  All input is validated here, before anything
runs or is written; a problem raises :class:`~elastic_bench.grammar.GrammarError`
(one line naming the argument and the accepted forms; the CLI exits with code 2).

Example ``sweep.yaml``::

    seq-len: 256..8192
    models: [softmax, elastic]
    experts: 16,32,64
    pass: infer,train_step
    out: results/experts.csv
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import registry
from ..attention import DTYPE_NAMES
from ..environment import resolve_device
from ..grammar import (
    GrammarError,
    human_int,
    parse_float,
    parse_int_axis,
    parse_memory_sizes,
    parse_name_list,
    parse_number,
)
from ..measure.cell import SERVE_BATCHES, SERVING_PASSES, backend_info

# infer = the throughput regime (every position, large batches); serve / serve_step = the serving
# regime (last query only / one appended interaction, serving batches): see elastic_bench/measure/passes.py
PASSES = ("infer", "fwd", "fwd_bwd", "train_step", "serve", "serve_step")
LEVELS = ("model", "op")
OBJECTIVES = ("auto", "all", "last")
PADDINGS = ("full", "random")
# --causal: yes = causal cells only, no = non-causal only, auto = every causality a backend
# supports (so each mechanism is compared with its peers of the same causality).
CAUSALITIES = ("auto", "yes", "no")
# Backend option axes with their own CLI flag; any other one via --option NAME=VALUES.
NAMED_OPTION_AXES = ("experts", "memory_size", "topk")

# Laptop CPU: the registered ones of these models, a small token budget and a short time
# budget per cell, so that `elastic-bench sweep --seq-len 256..8192` takes a few minutes.
CPU_DEFAULT_MODELS = ("softmax", "sdpa", "linear", "elastic", "elastic-causal", "no-mixing")  # no-mixing: the floor
CPU_DEFAULTS: dict[str, Any] = {
    "seq_len": "256..8192",
    "tokens_per_batch": "4k",
    "dtype": "fp32",
    "pass": "infer",
    "repeats": 200,  # the cap; sampling wants >= 10 samples and >= min-time seconds of them
    "min_time": 1.0,
    "max_time": 3.0,  # a call so slow that this passes first stops at >= 3 samples
    "warmup": 0,  # calls after the untimed FLOP-counting one; warm-up also lasts >= 0.5 s
    "threads": 1,  # one intra-op thread: stable timings even when the machine is busy
}
# GPU: every registered backend (unusable ones become `skipped:<reason>` rows).
GPU_DEFAULTS: dict[str, Any] = {
    "seq_len": "256..8192",
    "tokens_per_batch": "64k",
    "dtype": "bf16",
    "pass": "infer,train_step",
    "repeats": 1000,
    "min_time": 1.0,
    "max_time": 30.0,
    "warmup": 3,
}
COMMON_DEFAULTS: dict[str, Any] = {
    "level": "model",
    "causal": "auto",
    "objective": "auto",
    "d_model": 64,
    "heads": 2,
    "layers": 2,
    "n_items": 3706,  # the ML-1M catalogue
    "padding": "full",
    "dropout": "auto",
    "seed": 0,
    "threads": 0,
    "resume": True,
    "plot": True,
    "dry_run": False,
    "retry_errors": False,
    "baseline": "softmax",
    "process_repeats": 3,  # headline cells (the longest N): 3 interleaved repeats in fresh processes
    "interleave_calls": False,  # headline cells: time the cells of one workload shape call by call together
}
KEYS = (
    "seq_len", "batch", "tokens_per_batch", "models", "experts", "memory_size", "topk", "option",
    "d_model", "heads", "layers", "dtype", "pass", "level", "causal", "objective", "device", "repeats", "min_time", "max_time",
    "warmup", "n_items", "padding", "dropout", "seed", "threads", "out", "resume", "plot", "dry_run", "retry_errors",
    "baseline", "process_repeats", "interleave_calls",
)  # fmt: skip


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep needs; all axes already expanded and validated."""

    seq_lens: tuple[int, ...]
    models: tuple[str, ...]
    dtypes: tuple[str, ...]
    passes: tuple[str, ...]
    levels: tuple[str, ...] = ("model",)
    batches: tuple[int, ...] = ()
    tokens_per_batch: tuple[int, ...] = ()
    option_axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    d_models: tuple[int, ...] = (64,)
    heads: tuple[int, ...] = (2,)
    layers: tuple[int, ...] = (2,)
    objectives: tuple[str, ...] = ("auto",)
    causality: str = "auto"
    device: str = "cpu"
    n_items: int = 3706
    padding: str = "full"
    dropout: float | None = None  # None = auto: training's dropout in backward passes, 0 otherwise
    seed: int = 0
    threads: int = 0
    repeats: int = 200
    min_time: float = 1.0
    max_time: float = 60.0
    warmup: int = 1
    out: str = "results/sweep.csv"
    resume: bool = True
    plot: bool = True
    dry_run: bool = False
    retry_errors: bool = False
    baseline: str = "softmax"
    process_repeats: int = 1  # headline cells: repeats, each in a fresh process (see .repeats)
    interleave_calls: bool = False  # headline cells of one workload shape timed call by call together (.repeats)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML sweep file, keys normalised to ``snake_case``."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise GrammarError(f"--config: no such file {str(p)!r}; accepted: a YAML mapping of sweep options")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GrammarError(f"--config: {p} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise GrammarError(f"--config: {p} must hold a mapping of sweep options, e.g. 'seq-len: 256..8192'")
    out = {}
    for key, value in data.items():
        k = str(key).replace("-", "_")
        if k in ("passes", "pass_"):
            k = "pass"
        if k not in KEYS:
            raise GrammarError(f"--config: unknown key {key!r} in {p}; accepted: {', '.join(k.replace('_', '-') for k in KEYS)}")
        out[k] = value
    return out


@functools.lru_cache(maxsize=None)
def dtype_unsupported(device: str, dtype: str) -> str | None:
    """``None`` when ``device`` can run ``dtype`` (probed with a tiny matmul, softmax and LayerNorm)."""
    dev = torch.device(device)
    dt = DTYPE_NAMES[dtype]
    if dev.type == "cuda" and dt == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(dev)} has no bf16 support"
    try:
        a = torch.randn(8, 8, device=dev).to(dt)
        torch.nn.functional.layer_norm((a @ a).softmax(-1), (8,)).sum().item()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _text(v: Any) -> Any:
    """YAML lists -> comma strings; everything else unchanged."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return v


def _causal_text(v: Any) -> Any:
    """YAML reads ``causal: yes`` as True: map booleans back to the CLI's words."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    return v


def _bool(v: Any, arg: str) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise GrammarError(f"{arg}: {v!r} is not a boolean; accepted: true, false")


def _whole(value: Any, arg: str, minimum: int = 1) -> int:
    """One whole number (k/m suffixes allowed) for a scalar option."""
    try:
        return parse_number(str(value), arg, minimum)
    except GrammarError:
        raise GrammarError(f"{arg}: {value!r} is not a whole number ≥ {minimum}; accepted e.g. {max(minimum, 5)} or 1k") from None


def _option_value(token: str) -> Any:
    try:
        return parse_number(token, "--option", minimum=0)
    except GrammarError:
        pass
    try:
        return float(token)
    except ValueError:
        return {"true": True, "false": False}.get(token.lower(), token)


def parse_option_axes(items: list[str] | str | None) -> list[tuple[str, tuple[Any, ...]]]:
    """``["chunk_size=64,128"]`` -> ``[("chunk_size", (64, 128))]`` (integer grammar allowed)."""
    if not items:
        return []
    if isinstance(items, str):
        items = [items]
    axes = []
    for item in items:
        name, sep, values = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not values.strip():
            raise GrammarError(f"--option: {item!r} is not NAME=VALUES; accepted e.g. --option chunk_size=64,128 or chunk_size=64..256")
        if any(c.isdigit() for c in values) and all(ch.isdigit() or ch in "km.,:x+" for ch in values.lower().replace(" ", "")):
            parsed: tuple[Any, ...] = parse_int_axis(values, f"--option {name}", minimum=0)
        else:
            parsed = tuple(_option_value(v.strip()) for v in values.split(",") if v.strip())
        axes.append((name, parsed))
    return axes


def resolve_models(text: Any, device_type: str) -> tuple[str, ...]:
    """``--models``: a comma list of registered names, or ``all``; defaults depend on the device."""
    if text is None:
        registered = registry.names()
        if device_type == "cpu":
            chosen = tuple(m for m in registered if m in CPU_DEFAULT_MODELS)
            return chosen or tuple(registered)
        return tuple(registered) + tuple(sorted(registry.load_errors()))
    names = parse_name_list(_text(text), "--models")
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(registry.names())
            out.extend(sorted(registry.load_errors()))
            continue
        info = backend_info(n)
        if info.cls is None and n not in registry.load_errors():
            raise GrammarError(f"--models: {info.load_error}; accepted: a comma list of those names, or all")
        out.append(n)
    return tuple(dict.fromkeys(out))


def load_spec(overrides: Mapping[str, Any] | None = None, config: str | Path | None = None) -> SweepSpec:
    """Merge built-in defaults < ``config`` file < ``overrides`` (None = not given) and validate."""
    merged: dict[str, Any] = read_config_file(config) if config else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None and v != []}
    for a, b in (("batch", "tokens_per_batch"), ("tokens_per_batch", "batch")):
        if a in given and b not in given:
            merged.pop(b, None)  # the command line's batch policy replaces the file's
    merged.update(given)
    unknown = sorted(set(merged) - set(KEYS))
    if unknown:
        raise GrammarError(f"unknown sweep option(s) {', '.join(unknown)}; accepted: {', '.join(KEYS)}")

    dev_text = str(merged.get("device", "auto"))
    try:
        device = resolve_device(dev_text)
    except (ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc).startswith("--device") else f"--device: {dev_text!r} is not a device"
        raise GrammarError(msg if "accepted" in msg else f"{msg}; accepted forms are auto, cpu, cuda, cuda:N") from None
    defaults = {**COMMON_DEFAULTS, **(GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS)}
    if "batch" in merged and "tokens_per_batch" in merged:
        raise GrammarError("--batch and --tokens-per-batch are exclusive; give one (batch = tokens // seq_len, at least 1)")
    if "batch" in merged:
        defaults.pop("tokens_per_batch")
    get = lambda k: merged.get(k, defaults.get(k))  # noqa: E731

    seq_lens = parse_int_axis(_text(get("seq_len")), "--seq-len")
    batches = parse_int_axis(_text(merged["batch"]), "--batch") if "batch" in merged else ()
    tokens = parse_int_axis(_text(get("tokens_per_batch")), "--tokens-per-batch") if not batches else ()
    dtypes = parse_name_list(_text(get("dtype")), "--dtype", DTYPE_NAMES)
    for dt in dtypes:
        why = dtype_unsupported(str(device), dt)
        if why:
            raise GrammarError(f"--dtype: {device.type} cannot run {dt} ({why}); accepted here: fp32, fp64" + (", bf16, fp16" if device.type == "cuda" else ""))
    passes = parse_name_list(_text(get("pass")), "--pass", PASSES)
    levels = parse_name_list(_text(get("level")), "--level", LEVELS)
    objectives = parse_name_list(_text(get("objective")), "--objective", OBJECTIVES)
    causality = parse_name_list(_text(_causal_text(get("causal"))), "--causal", CAUSALITIES)
    if len(causality) != 1:
        raise GrammarError("--causal: one value; accepted: auto, yes, no")
    padding = parse_name_list(_text(get("padding")), "--padding", PADDINGS)
    if len(padding) != 1:
        raise GrammarError("--padding: one value; accepted: full, random")
    d_models = parse_int_axis(_text(get("d_model")), "--d-model")
    heads = parse_int_axis(_text(get("heads")), "--heads")
    layers = parse_int_axis(_text(get("layers")), "--layers")
    for d in d_models:
        for h in heads:
            if d % h:
                raise GrammarError(f"--heads: d_model={d} is not divisible by heads={h}; accepted: heads that divide every --d-model")
    models = resolve_models(merged.get("models"), device.type)
    if not models:
        raise GrammarError("--models: no backend is registered; see `elastic-bench doctor`")

    option_axes: list[tuple[str, tuple[Any, ...]]] = []
    if "experts" in merged:
        option_axes.append(("experts", parse_int_axis(_text(merged["experts"]), "--experts")))
    if "memory_size" in merged:
        option_axes.append(("memory_size", parse_memory_sizes(_text(merged["memory_size"]))))
    if "topk" in merged:
        option_axes.append(("topk", parse_int_axis(_text(merged["topk"]), "--topk")))
    for name, values in parse_option_axes(merged.get("option")):
        if name in dict(option_axes):
            raise GrammarError(f"--option: {name} is given twice")
        if name == "memory_size":
            values = parse_memory_sizes(values)
        option_axes.append((name, values))

    notes = []
    serving = [p for p in passes if p in SERVING_PASSES]
    if serving and "op" in levels:
        notes.append(f"--pass {','.join(serving)} runs at the model level only: no op-level cells for it")
    if serving and not batches:
        notes.append(f"--pass {','.join(serving)}: batch {','.join(map(str, SERVE_BATCHES))} (serving; give --batch 1..64 for more)")
    infos = [backend_info(m) for m in models]
    for name, _ in option_axes:
        if not any(name in i.options for i in infos):
            notes.append(f"--{name.replace('_', '-')} applies to none of the selected models (no backend declares option {name!r})")
    for t in tokens:
        over = [n for n in seq_lens if n > t]
        if over:
            notes.append(
                f"--tokens-per-batch {human_int(t)} is exceeded at seq-len {', '.join(human_int(n) for n in over)}: "
                f"batch 1 holds N tokens there (e.g. {human_int(over[-1])}), so those cells are not at the same token budget"
            )
    for info in infos:
        if info.cls is not None and not info.causal_modes(causality[0]):
            notes.append(f"{info.name} cannot run {'causal' if causality[0] == 'yes' else 'non-causal'}: left out by --causal {causality[0]}")
    # experts > seq_len: a backend with k dispatchers over fewer than k tokens is invalid here.
    experts_values = dict(option_axes).get("experts")
    for info in infos:
        if "experts" not in info.options:
            continue
        vals = experts_values or (info.options["experts"],)
        bad = [e for e in vals if isinstance(e, int) and e > min(seq_lens)]
        if bad:
            which = f"{bad[0]} experts" if experts_values else f"{info.name}'s default of {bad[0]} experts"
            raise GrammarError(
                f"--experts: {which} > --seq-len {min(seq_lens)} for {info.name}; accepted: experts ≤ every sequence length"
            )

    repeats = _whole(get("repeats"), "--repeats")
    warmup = _whole(get("warmup"), "--warmup", 0)
    min_time = parse_float(get("min_time"), "--min-time")
    max_time = parse_float(get("max_time"), "--max-time")
    n_items = _whole(get("n_items"), "--n-items")
    dropout_text = str(get("dropout")).strip().lower()
    dropout = None if dropout_text == "auto" else parse_float(dropout_text, "--dropout")
    if dropout is not None and dropout >= 1:
        raise GrammarError(f"--dropout: {dropout} must be in [0, 1) or auto")
    seed = _whole(get("seed"), "--seed", 0)
    threads = _whole(get("threads"), "--threads", 0)
    out = str(merged.get("out") or _default_out(device.type))
    if not out.strip() or Path(out).is_dir():
        raise GrammarError(f"--out: {out!r} is a directory; accepted: a CSV file path such as results/sweep.csv")
    baseline = str(get("baseline"))
    process_repeats = _whole(get("process_repeats"), "--process-repeats")
    return SweepSpec(
        seq_lens=seq_lens,
        models=models,
        dtypes=dtypes,
        passes=passes,
        levels=levels,
        batches=batches,
        tokens_per_batch=tokens,
        option_axes=tuple(option_axes),
        d_models=d_models,
        heads=heads,
        layers=layers,
        objectives=objectives,
        causality=causality[0],
        device=str(device),
        n_items=n_items,
        padding=padding[0],
        dropout=dropout,
        seed=seed,
        threads=threads,
        repeats=repeats,
        min_time=min_time,
        max_time=max_time,
        warmup=warmup,
        out=out,
        resume=_bool(get("resume"), "--resume"),
        plot=_bool(get("plot"), "--plot"),
        dry_run=_bool(get("dry_run"), "--dry-run"),
        retry_errors=_bool(get("retry_errors"), "--retry-errors"),
        baseline=baseline,
        process_repeats=process_repeats,
        interleave_calls=_bool(get("interleave_calls"), "--interleave-calls"),
        notes=tuple(notes),
    )


def _default_out(device_type: str) -> str:
    return f"results/sweep-{device_type}.csv"


def describe_defaults() -> str:
    """One paragraph for ``--help``."""
    cpu = ", ".join(f"{k.replace('_', '-')}={v}" for k, v in CPU_DEFAULTS.items())
    gpu = ", ".join(f"{k.replace('_', '-')}={v}" for k, v in GPU_DEFAULTS.items())
    return (
        f"Defaults on CPU: models = the registered ones of {', '.join(CPU_DEFAULT_MODELS)}; {cpu} "
        f"(about 7 minutes on a 2-core CPU for 256..8192). Defaults on GPU: every registered backend "
        f"(unusable ones are recorded as skipped); {gpu}."
    )


