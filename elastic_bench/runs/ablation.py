"""``elastic-bench ablate AXIS --values ...``: one ablation = an accuracy sweep *and* an
efficiency sweep of the same configurations, through the existing engines and store.

Both halves append to **one** results CSV (default ``results/ablate-<axis>-<data>.csv``):
``task=accuracy`` rows (:func:`~elastic_bench.runs.accuracy.run_accuracy_sweep`, one per
model × value × seed) and ``task=efficiency`` rows (:func:`~elastic_bench.runs.sweep.run_sweep`,
one per model × value × length, ``infer`` by default).  Rows of the two halves join on
model + resolved ``options`` + ``d_model``/``heads``/``layers`` (the options column holds every
backend option, swept or default, sorted, in both halves); the efficiency half runs at the
accuracy runs' max length unless ``--seq-len`` says otherwise, at the dataset's catalogue size.
Each half is resumable on its own (``config_hash``), so rerunning the command only runs the
missing cells.

Caveat: the efficiency sweep's model uses the recommender defaults for what a
:class:`~elastic_bench.measure.cell.Cell` does not describe (FFN ×4 with GELU, no L2 norm);
a training preset with another FFN (``sasrec-ml1m``: ×1 ReLU) is timed with the default FFN.

Example::

    spec = ablation_spec("memory-size", "0,1k,4k", data="ml-1m", seeds="0,1,2")
    run_ablation(spec, console)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ..grammar import GrammarError
from ..report.ablation_axes import Axis, get_axis
from ..train.config import TrainConfig
from .accuracy import AccuracySpec, run_accuracy_sweep
from .accuracy_spec import accuracy_spec
from .spec import SweepSpec, load_spec, parse_option_axes


@dataclass(frozen=True)
class AblationSpec:
    axis: Axis
    values: tuple[Any, ...]
    accuracy: tuple[AccuracySpec, ...]  # one per value for shape axes (layers, heads), else one
    efficiency: SweepSpec
    out: str
    plot: bool = True
    dry_run: bool = False
    commands: tuple[str, ...] = field(default=(), compare=False)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text).split(":")[0]).strip("-").lower() or "data"


def _values_text(values: tuple[Any, ...]) -> str:
    return ",".join(str(v) for v in values)


def catalogue_size(data: str, data_dir: str | None) -> int | None:
    """Items in the dataset (the efficiency half's ``n_items``), or None if it cannot be read."""
    from ..data.resolve import load_dataset

    try:
        return int(load_dataset(data, data_dir).n_items)
    except Exception:  # noqa: BLE001 - the efficiency half then uses its default catalogue
        return None


def ablation_spec(
    axis: str,
    values: str,
    data: str | None = None,
    data_dir: str | None = None,
    seeds: str | None = None,
    preset: str | None = None,
    models: str | None = None,
    option: list[str] | None = None,
    seq_len: str | None = None,
    max_len: str | None = None,
    d_model: str | None = None,
    heads: str | None = None,
    layers: str | None = None,
    epochs: int | None = None,
    train: dict[str, Any] | None = None,
    efficiency: dict[str, Any] | None = None,
    device: str | None = None,
    out: str | None = None,
    resume: bool | None = None,
    dry_run: bool = False,
    plot: bool = True,
) -> AblationSpec:
    """Validate everything (GrammarError on bad input, before anything runs or is written).

    ``option``: fixed backend options for both halves, e.g. ``["experts=8"]``; ``train``:
    extra :class:`TrainConfig` fields (``batch_size``, ``lr``, ``patience``, ``max_minutes``...);
    ``efficiency``: extra sweep options (``pass``, ``repeats``, ``min_time``, ``tokens_per_batch``...).
    """
    ax = get_axis(axis)
    vals = ax.parse(values)
    if not vals:
        raise GrammarError(f"--values: empty; accepted: a comma list or range for {ax.name}")
    fixed = parse_option_axes(option)
    if any(name == ax.key for name, _ in fixed):
        raise GrammarError(f"--option {ax.key}: is the ablated axis; give its values with --values")
    if ax.kind == "shape" and ((ax.key == "layers" and layers) or (ax.key == "heads" and heads)):
        raise GrammarError(f"--{ax.key}: is the ablated axis; give its values with --values")
    model_names = ",".join(vals) if ax.kind == "model" else (models or ",".join(ax.default_models))
    named = {"experts": None, "memory_size": None, "topk": None}
    other_opts: list[str] = []
    for name, vs in fixed:
        if name in named:
            named[name] = _values_text(vs)
        else:
            other_opts.append(f"{name}={_values_text(vs)}")
    if ax.kind == "option":
        if ax.key in named:
            named[ax.key] = _values_text(vals)
        else:
            other_opts.append(f"{ax.key}={_values_text(vals)}")
    shape_values = vals if ax.kind == "shape" else (None,)
    acc_specs = []
    for v in shape_values:
        a = accuracy_spec(
            models=model_names, experts=named["experts"], memory_size=named["memory_size"], topk=named["topk"], option=other_opts or None,
            seeds=seeds, max_len=max_len, d_model=d_model, heads=str(v) if ax.key == "heads" and v is not None else heads,
            layers=str(v) if ax.key == "layers" and v is not None else layers, device=device, data=data, data_dir=data_dir, preset=preset,
            epochs=epochs, out="unused.csv", resume=resume, dry_run=dry_run, plot=False,
        )  # fmt: skip
        if train:
            bad = sorted(set(train) - set(TrainConfig.field_names()) - {"model", "seed", "options"})
            if bad:
                raise GrammarError(f"train: unknown training field(s) {', '.join(bad)}; accepted: {', '.join(TrainConfig.field_names())}")
            a = dataclasses.replace(a, base=dataclasses.replace(a.base, **train))
        acc_specs.append(a)
    base = acc_specs[0].base
    if len(acc_specs[0].max_lens) > 1:
        raise GrammarError("--max-len: one value in an ablation (the efficiency half is joined at it)")
    max_n = acc_specs[0].max_lens[0] if acc_specs[0].max_lens else base.max_len
    out = out or f"results/ablate-{ax.name}-{slug(base.data)}.csv"
    acc_specs = [dataclasses.replace(a, out=out) for a in acc_specs]
    n_items = catalogue_size(base.data, data_dir)
    eff: dict[str, Any] = {
        "models": model_names, "experts": named["experts"], "memory_size": named["memory_size"], "topk": named["topk"],
        "option": other_opts or None, "seq_len": seq_len or str(max_n), "d_model": str(base.d_model),
        "heads": _values_text(vals) if ax.key == "heads" else str(base.heads),
        "layers": _values_text(vals) if ax.key == "layers" else str(base.layers), "pass": "infer", "device": device,
        "n_items": n_items, "seed": 0, "out": out, "plot": False, "dry_run": dry_run, "resume": resume,
    }  # fmt: skip
    eff.update({k.replace("-", "_"): v for k, v in (efficiency or {}).items()})
    espec = load_spec(eff)
    cmd = f"elastic-bench ablate {ax.name} --values {values} --data {base.data}" + (f" --seeds {seeds}" if seeds else "") + (
        f" --preset {preset}" if preset else ""
    )
    return AblationSpec(ax, vals, tuple(acc_specs), espec, out, plot=plot, dry_run=dry_run, commands=(cmd,))


def run_ablation(
    spec: AblationSpec, console: Console | None = None, progress: bool = True, report_dir: str | Path | None = None, launcher: Any = None
) -> list[Path]:
    """Run the missing accuracy cells, then the missing efficiency cells; then the figures.
    Returns the figure files written (none with ``dry_run`` or ``plot=False``)."""
    from .sweep import run_sweep

    console = console or Console(emoji=False)
    console.rule(f"[bold]ablation {spec.axis.name}[/] = {', '.join(str(v) for v in spec.values)} -> {spec.out}")
    console.print("[bold]accuracy half[/]")
    for a in spec.accuracy:
        run_accuracy_sweep(a, console, progress=progress, launcher=launcher)
    console.print("[bold]efficiency half[/]")
    run_sweep(spec.efficiency, console, progress=progress, launcher=launcher)
    if spec.dry_run or not spec.plot:
        return []
    from ..report.figure_kit import default_report_dir
    from ..report.paper_figures import plot_ablation
    from ..store import load_results

    out_dir = Path(report_dir) if report_dir else default_report_dir(spec.out)
    files = plot_ablation(load_results(spec.out), spec.axis, out_dir)
    console.print(f"figures: {sum(1 for f in files if f.suffix == '.png')} in {out_dir}/")
    return files


def describe_axes() -> str:
    from ..report.ablation_axes import AXES

    return "; ".join(f"{a.name} ({a.label})" for a in AXES.values())

