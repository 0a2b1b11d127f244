"""``elastic-bench figures --preset NAME``: run the missing cells of a figure preset, then write
every figure, a LaTeX table and a manifest into ``reports/<preset>/``.

A preset is a small YAML file (``elastic_bench/figure_presets/<name>.yaml``, or any path)::

    name: cpu-small
    data: ml-1m                    # named dataset, file, or synthetic[:k=v,...]
    train_preset: quick            # TrainConfig preset every accuracy cell starts from
    train: {max_len: 50, epochs: 3, d_model: 32}   # TrainConfig fields overriding it
    seeds: 0,1,2
    main:                          # the cross-model comparison (Pareto fronts, claim check, table)
      accuracy_models: softmax,elastic,elastic-causal
      efficiency_models: softmax,sdpa,linear,elastic,elastic-causal
      seq_len: 64..1024
      option: [experts=16]         # fixed backend options of both halves (optional)
    efficiency: {repeats: 5, min_time: 0.2}       # sweep options of every efficiency half
    ablations:
      - {axis: memory-size, values: "0,1k,4k"}
      - {axis: experts, values: "4,8,16", option: [memory_size=1k]}
    table: {metrics: [hr@10, ndcg@10, mrr@10]}
    threads: 1                     # torch threads of every training (epoch times compare)
    sweeps:                        # efficiency sweeps (any `sweep` option) -> <results_dir>/<name>.csv
      - {name: throughput, models: "softmax,elastic", seq_len: "256..8192", pass: "infer,train_step"}
    accuracy:                      # groups of training cells, each with its own TrainConfig fields
      - {name: causal, models: "softmax,elastic-causal", seeds: "0,1", train: {objective: all}}
      - {name: bank, models: elastic, memory_size: "0,64k", train: {objective: last}, max_len: 200}
    verdict: true                  # also the claims table of report/verdict_report.py

The sweeps run first (minutes, on a quiet machine), then the accuracy groups in their order
(hours: every cell checkpointed each epoch under ``<results_dir>/checkpoints/``, its epoch
history kept in ``<results_dir>/runs/``).  Results go to ``<results_dir>/main.csv`` and ``<results_dir>/ablate-<axis>.csv`` (default
``results/<name>/``), each holding both the accuracy and the efficiency rows; every run is
resumable.  ``reports/<name>/manifest.json`` records the preset, the equivalent commands, the
environment, the sha256 of every CSV and of every figure's data subset, so
``elastic-bench figures --preset <name> --from-csv`` rebuilds every figure and table from the
CSVs alone (no training, no timing) and checks the CSVs are the ones the manifest names.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ..grammar import GrammarError

PRESET_DIR = Path(__file__).resolve().parent.parent / "figure_presets"
PRESET_KEYS = {"name", "description", "data", "data_dir", "train_preset", "train", "seeds", "device", "main", "efficiency",
               "ablations", "table", "results_dir", "serving", "accuracy", "threads", "sweeps", "verdict"}  # fmt: skip
# serving: {models, seq_len, batch, pass}: serve / serve_step sweeps into main.csv (README "Serving")
SERVING_KEYS = {"models", "seq_len", "batch", "pass"}
MAIN_KEYS = {"accuracy_models", "efficiency_models", "seq_len", "option"}
ABLATION_KEYS = {"axis", "values", "models", "option", "seq_len"}
# accuracy: [{name, models, seeds, train, option, memory_size, max_len}]: groups of training cells
# (each its own TrainConfig overrides) into <results_dir>/accuracy.csv, run in the listed order,
# each cell checkpointed every epoch under <results_dir>/checkpoints/ and its epoch history kept
# in <results_dir>/runs/<model>-<config_hash>.json
ACCURACY_GROUP_KEYS = {"name", "models", "seeds", "train", "option", "memory_size", "max_len"}
# sweeps: [{name, <any elastic-bench sweep option>}]: efficiency sweeps into <results_dir>/<name>.csv,
# at the accuracy cells' shape (d_model, heads, layers, the dataset's catalogue) unless they say
# otherwise.  verdict: true -> reports/<name>/ also gets the claims table (report/verdict_report.py).


@dataclass
class FigurePreset:
    name: str
    path: Path
    config: dict[str, Any]
    results_dir: Path

    @property
    def main_csv(self) -> Path:
        return self.results_dir / "main.csv"

    def sweep_csv(self, name: str) -> Path:
        return self.results_dir / f"{name}.csv"

    def ablation_csv(self, axis: str) -> Path:
        return self.results_dir / f"ablate-{axis}.csv"

    @property
    def accuracy_csv(self) -> Path:
        return self.results_dir / "accuracy.csv"

    def csvs(self) -> list[Path]:
        out = [self.main_csv] if self.config.get("main") else []
        out += [self.accuracy_csv] if self.config.get("accuracy") else []
        out += [self.sweep_csv(sw["name"]) for sw in self.config.get("sweeps") or []]
        return out + [self.ablation_csv(a["axis"]) for a in self.config.get("ablations", [])]


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, results_root: str | Path = "results") -> FigurePreset:
    """A preset by name (``figure_presets/<name>.yaml``) or YAML path; validated."""
    import yaml

    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = PRESET_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise GrammarError(f"--preset {name_or_path}: no such preset; accepted: {', '.join(available_presets())} or a path to a YAML file")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GrammarError(f"--preset: {p} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise GrammarError(f"--preset: {p} must hold a mapping")
    cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    bad = sorted(set(cfg) - PRESET_KEYS)
    if bad:
        raise GrammarError(f"--preset: unknown key(s) {', '.join(bad)} in {p}; accepted: {', '.join(sorted(PRESET_KEYS))}")
    main = cfg.get("main") or {}
    if set(main) - MAIN_KEYS:
        raise GrammarError(f"--preset: unknown main key(s) {', '.join(sorted(set(main) - MAIN_KEYS))}; accepted: {', '.join(sorted(MAIN_KEYS))}")
    serving = cfg.get("serving") or {}
    if not isinstance(serving, dict) or set(serving) - SERVING_KEYS:
        raise GrammarError(f"--preset: serving is a mapping of {', '.join(sorted(SERVING_KEYS))}")
    for a in cfg.get("ablations") or []:
        if not isinstance(a, dict) or "axis" not in a or "values" not in a or set(a) - ABLATION_KEYS:
            raise GrammarError(f"--preset: each ablation is a mapping with axis and values (and optionally {', '.join(sorted(ABLATION_KEYS - {'axis', 'values'}))})")
    for g in cfg.get("accuracy") or []:
        if not isinstance(g, dict) or "models" not in g or set(g) - ACCURACY_GROUP_KEYS:
            raise GrammarError(f"--preset: each accuracy group is a mapping with models (and optionally {', '.join(sorted(ACCURACY_GROUP_KEYS - {'models'}))})")
    for sw in cfg.get("sweeps") or []:
        if not isinstance(sw, dict) or not str(sw.get("name") or "").replace("-", "").replace("_", "").isalnum():
            raise GrammarError("--preset: each sweep is a mapping with a name (letters, digits, - and _) and elastic-bench sweep options")
    if not isinstance(cfg.get("threads", 0), int) or cfg.get("threads", 0) < 0:
        raise GrammarError(f"--preset: threads must be a whole number >= 0 (0: leave torch's), got {cfg.get('threads')!r}")
    name = str(cfg.get("name") or p.stem)
    results_dir = Path(cfg["results_dir"]) if cfg.get("results_dir") else Path(results_root) / name
    return FigurePreset(name, p, cfg, results_dir)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- running


@dataclass
class FiguresResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    commands: list[str] = field(default_factory=list)


def plan_preset(preset: FigurePreset, dry_run: bool = False, efficiency: bool = True) -> tuple[list[tuple[str, Any]], list[str]]:
    """Every sweep of ``preset``, validated before anything runs: ``[(kind, spec)]`` and the
    equivalent commands.  kind: ``accuracy`` | ``efficiency`` | ``ablation``."""
    import dataclasses

    from .ablation import ablation_spec, catalogue_size
    from .accuracy_spec import accuracy_spec
    from .spec import load_spec

    cfg = preset.config
    train = dict(cfg.get("train") or {})
    max_len = train.pop("max_len", None)
    eff_extra = {str(k).replace("-", "_"): _text(v) if isinstance(v, list) else v for k, v in (cfg.get("efficiency") or {}).items()}
    common = dict(data=cfg.get("data"), data_dir=cfg.get("data_dir"), seeds=_text(cfg.get("seeds")), preset=cfg.get("train_preset"),
                  device=cfg.get("device"))  # fmt: skip
    plan: list[tuple[str, Any]] = []
    commands: list[str] = []
    main = cfg.get("main") or {}
    if main and efficiency:
        opts = main.get("option") or None
        a = accuracy_spec(models=_text(main.get("accuracy_models")), max_len=str(max_len) if max_len else None, option=opts,
                          out=str(preset.main_csv), dry_run=dry_run, plot=False, **common)  # fmt: skip
        if train:
            a = dataclasses.replace(a, base=dataclasses.replace(a.base, **train))
        e = load_spec({"models": _text(main.get("efficiency_models")), "seq_len": _text(main.get("seq_len")) or str(a.base.max_len),
                       "d_model": str(a.base.d_model), "heads": str(a.base.heads), "layers": str(a.base.layers), "pass": "infer",
                       "option": opts, "n_items": catalogue_size(a.base.data, cfg.get("data_dir")), "device": cfg.get("device"),
                       "out": str(preset.main_csv), "plot": False, "dry_run": dry_run, **eff_extra})  # fmt: skip
        plan += [("accuracy", a), ("efficiency", e)]
        sv = cfg.get("serving") or {}
        if sv:  # the serving regime: same shape, serving batches and lengths, into main.csv
            s = load_spec({"models": _text(sv.get("models")) or _text(main.get("efficiency_models")), "seq_len": _text(sv.get("seq_len")) or "50..1024",
                           "batch": _text(sv.get("batch")) or "1", "pass": _text(sv.get("pass")) or "serve,serve_step",
                           "d_model": str(a.base.d_model), "heads": str(a.base.heads), "layers": str(a.base.layers), "option": opts,
                           "n_items": e.n_items, "device": cfg.get("device"), "out": str(preset.main_csv), "plot": False, "dry_run": dry_run,
                           **eff_extra})  # fmt: skip
            plan.append(("efficiency", s))
            commands.append(f"elastic-bench sweep --models {','.join(s.models)} --pass {','.join(s.passes)} --seq-len {','.join(map(str, s.seq_lens))} "
                            f"--batch {','.join(map(str, s.batches))} --d-model {a.base.d_model} --heads {a.base.heads} --layers {a.base.layers} --out {preset.main_csv}")  # fmt: skip
        extra = "".join(f" --option {o}" for o in opts or [])
        commands.append(f"elastic-bench sweep --task accuracy --models {','.join(a.models)} --data {a.base.data} "
                        f"--seeds {','.join(map(str, a.seeds))}{extra} --out {preset.main_csv}  # + the preset's train fields")  # fmt: skip
        commands.append(f"elastic-bench sweep --models {','.join(e.models)} --seq-len {','.join(map(str, e.seq_lens))}{extra} "
                        f"--d-model {a.base.d_model} --heads {a.base.heads} --layers {a.base.layers} --out {preset.main_csv}")  # fmt: skip
    # the efficiency sweeps first: minutes, best measured on a quiet machine, before the hours of training
    if cfg.get("sweeps") and efficiency:
        base = train_base(cfg)
        n_items = catalogue_size(base.data, cfg.get("data_dir"))
        for sw in cfg["sweeps"]:
            opts = {str(k).replace("-", "_"): _text(v) if isinstance(v, list) and k != "option" else v for k, v in sw.items() if k != "name"}
            values = {"d_model": str(base.d_model), "heads": str(base.heads), "layers": str(base.layers), "n_items": n_items, "device": cfg.get("device"),
                      **eff_extra, **opts, "out": str(preset.sweep_csv(sw["name"])), "plot": False, "dry_run": dry_run}  # fmt: skip
            e = load_spec({k: v for k, v in values.items() if v is not None})
            plan.append(("efficiency", e))
            flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in opts.items() if k != "option") + "".join(f" --option {o}" for o in opts.get("option") or [])
            commands.append(f"elastic-bench sweep{flags} --d-model {base.d_model} --heads {base.heads} --layers {base.layers} --out {e.out}")
    for g in cfg.get("accuracy") or []:
        a = accuracy_spec(models=_text(g["models"]), max_len=_text(g.get("max_len") or max_len), option=g.get("option"),
                          memory_size=_text(g.get("memory_size")), out=str(preset.accuracy_csv), dry_run=dry_run, plot=False,
                          **{**common, "seeds": _text(g.get("seeds")) or common["seeds"]})  # fmt: skip
        fields = {**train, **{str(k).replace("-", "_"): v for k, v in (g.get("train") or {}).items()}}
        fields.pop("max_len", None)
        a = dataclasses.replace(a, base=dataclasses.replace(a.base, **fields), checkpoint_dir=str(preset.results_dir / "checkpoints"),
                                runs_dir=str(preset.results_dir / "runs"), threads=int(cfg.get("threads") or 0))  # fmt: skip
        plan.append(("accuracy", a))
        opts = "".join(_flag(k, v) for k, v in sorted(fields.items()))
        commands.append(f"elastic-bench sweep --task accuracy --models {','.join(a.models)} --data {a.base.data} --preset {cfg.get('train_preset')} "
                        f"--seeds {','.join(map(str, a.seeds))} --max-len {','.join(map(str, a.max_lens or (a.base.max_len,)))}"
                        f"{' --memory-size ' + _text(g['memory_size']) if g.get('memory_size') else ''}  # group {g.get('name', '')}:{opts} --out {preset.accuracy_csv}")  # fmt: skip
    for ab in (cfg.get("ablations") or []) if efficiency else []:
        spec = ablation_spec(
            ab["axis"], _text(ab["values"]), models=_text(ab.get("models")), option=ab.get("option"), seq_len=_text(ab.get("seq_len")),
            max_len=str(max_len) if max_len else None, train=train or None, efficiency=eff_extra or None,
            out=str(preset.ablation_csv(ab["axis"])), dry_run=dry_run, plot=False, **common,
        )  # fmt: skip
        plan.append(("ablation", spec))
        commands.extend(c + "".join(f" --option {o}" for o in ab.get("option") or []) + f" --out {spec.out}" for c in spec.commands)
    return plan, commands


def _flag(name: str, value: Any) -> str:
    """A train field as `elastic-bench train` spells it: ``--max-len 50``, ``--no-train-on-valid``, ``--non-causal``."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f" --{flag}" if value else (" --non-causal" if name == "causal" else f" --no-{flag}")
    return f" --{flag} {value}"


def train_base(cfg: dict[str, Any]) -> Any:
    """The TrainConfig every accuracy cell of a preset starts from (its train_preset and train fields)."""
    import dataclasses

    from ..presets import train_preset

    fields = {k: v for k, v in (cfg.get("train") or {}).items()}
    base = train_preset(cfg.get("train_preset") or "quick")
    return dataclasses.replace(base, data=cfg.get("data") or base.data, **fields)


def pending_cells(preset: FigurePreset) -> list[str]:
    """The accuracy cells of ``preset`` without a row yet, each with its checkpoint's progress."""
    from ..store import ResultsStore
    from ..train.checkpoint import checkpoint_progress
    from .accuracy import expand_accuracy

    done = ResultsStore(preset.accuracy_csv).completed() if preset.accuracy_csv.is_file() else {}
    plan, _ = plan_preset(preset, dry_run=True, efficiency=False)
    out = []
    for kind, spec in plan:
        if kind != "accuracy":
            continue
        for c in expand_accuracy(spec):
            h = c.config_hash()
            if h in done:
                continue
            opts = ",".join([f"{k}={v}" for k, v in c.options] + c.causality_shown())
            what = f"{c.model}{f' [{opts}]' if opts else ''} objective {_objective(c)} N={c.max_len} seed {c.seed} on {c.data} ({h})"
            ckpt = Path(spec.checkpoint_dir or "") / f"{h}.pt"
            out.append(f"{what}: {checkpoint_progress(ckpt, c.epochs)}")
    return out


def _objective(cfg: Any) -> str:
    """The objective the cell will train with (``auto`` resolved as the trainer resolves it), so
    that the pending line names what its finished row will say."""
    if cfg.objective != "auto":
        return cfg.objective
    from ..measure.cell import backend_info
    from ..train.trainer import resolve_objective

    info = backend_info(cfg.model)
    if info.cls is None:
        return cfg.objective
    return resolve_objective(cfg, cfg.causal_for(info.cls.capabilities.causal))


def run_preset_cells(preset: FigurePreset, console: Console, progress: bool = True, dry_run: bool = False, launcher: Any = None) -> list[str]:
    """Run whatever cells of ``preset`` are missing (resumable); returns the equivalent commands."""
    from .ablation import run_ablation
    from .accuracy import run_accuracy_sweep
    from .sweep import run_sweep

    plan, commands = plan_preset(preset, dry_run)  # every spec validated before anything runs
    for kind, spec in plan:
        if kind == "accuracy":
            console.rule(f"[bold]accuracy: {spec.models and ', '.join(spec.models)} -> {spec.out}[/]")
            run_accuracy_sweep(spec, console, progress=progress, launcher=launcher)
        elif kind == "efficiency":
            console.rule("[bold]main comparison: efficiency[/]")
            run_sweep(spec, console, progress=progress, launcher=launcher)
        else:
            run_ablation(spec, console, progress=progress, launcher=launcher)
    return commands


# ----------------------------------------------------------------------------- figures


def build_figures(preset: FigurePreset, out_dir: Path, console: Console | None = None) -> tuple[list[Path], dict[str, str]]:
    """Every figure and the table from the preset's CSVs alone; returns (files, table name -> path)."""
    from ..report.accuracy_plots import plot_accuracy
    from ..report.latex import results_table
    from ..report.paper_figures import plot_ablation, plot_claim_check, plot_pareto
    from ..report.plots import plot_results
    from ..store import load_results

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    tables: dict[str, str] = {}
    cfg = preset.config
    if cfg.get("main"):
        if not preset.main_csv.is_file():
            raise GrammarError(f"{preset.main_csv}: missing; run `elastic-bench figures --preset {preset.name}` without --from-csv first")
        df = load_results(preset.main_csv)
        files += plot_claim_check(df, out_dir)
        files += plot_pareto(df, out_dir)
        files += plot_results(df, baseline="softmax", out_dir=out_dir / "efficiency")  # serving figures included
        if console and not df["pass"].isin(["serve", "serve_step"]).any():
            console.print(f"[yellow]note:[/] {preset.main_csv} has no serve/serve_step rows: serving figures skipped "
                          "(run the preset without --from-csv to measure them)")  # fmt: skip
        files += plot_accuracy(df, out_dir / "accuracy")
        metrics = tuple((cfg.get("table") or {}).get("metrics") or ("hr@10", "ndcg@10", "mrr@10"))
        try:
            tex = results_table(df, metrics=metrics, caption=f"Main results ({preset.name})", label=f"tab:{preset.name}-main")
            (out_dir / "main-results.tex").write_text(tex)
            files.append(out_dir / "main-results.tex")
            tables["main-results"] = str(out_dir / "main-results.tex")
        except ValueError as exc:
            if console:
                console.print(f"[yellow]table skipped:[/] {exc}")
    if cfg.get("verdict"):
        from ..report.verdict_report import write_verdict

        files += write_verdict(preset.results_dir, out_dir, pending_cells(preset), name=preset.name)
    for ab in cfg.get("ablations") or []:
        path = preset.ablation_csv(ab["axis"])
        if not path.is_file():
            raise GrammarError(f"{path}: missing; run `elastic-bench figures --preset {preset.name}` without --from-csv first")
        df = load_results(path)
        files += plot_ablation(df, ab["axis"], out_dir)
        try:
            from ..report.latex import results_table

            tex = results_table(df, caption=f"Ablation of {ab['axis']} ({preset.name})", label=f"tab:{preset.name}-ablate-{ab['axis']}")
            (out_dir / f"ablate-{ab['axis']}.tex").write_text(tex)
            files.append(out_dir / f"ablate-{ab['axis']}.tex")
        except ValueError:
            pass
    return files, tables


def _figure_hashes(out_dir: Path, files: list[Path]) -> dict[str, str]:
    """sha256 of each figure's data (its CSV subset) and of each table, keyed by path under out_dir."""
    out = {}
    for f in sorted(set(files)):
        if f.suffix in (".csv", ".tex") and f.is_file():
            out[str(f.relative_to(out_dir))] = sha256(f)
    return out


def write_manifest(preset: FigurePreset, out_dir: Path, files: list[Path], commands: list[str]) -> Path:
    from ..environment import environment

    manifest = {
        "preset": preset.name,
        "preset_file": str(preset.path),
        "preset_config": preset.config,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
        "regenerate": f"elastic-bench figures --preset {preset.path if preset.path.parent != PRESET_DIR else preset.name} --from-csv",
        "environment": {**environment("cpu"), "python": sys.version.split()[0], "platform": platform.platform()},
        "csvs": {str(p): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in preset.csvs() if p.is_file()},
        "figure_data": _figure_hashes(out_dir, files),
        "figures": sorted(str(f.relative_to(out_dir)) for f in files if f.suffix in (".png", ".pdf")),
    }
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path


def run_figures(
    preset_name: str,
    from_csv: bool = False,
    out_root: str | Path = "reports",
    results_root: str | Path = "results",
    console: Console | None = None,
    progress: bool = True,
    dry_run: bool = False,
    data_dir: str | None = None,
    launcher: Any = None,
) -> FiguresResult:
    """The whole ``figures`` command (module docstring); ``data_dir`` overrides the preset's."""
    console = console or Console(emoji=False)
    preset = load_preset(preset_name, results_root)
    if data_dir:
        preset.config["data_dir"] = data_dir
    out_dir = Path(out_root) / preset.name
    result = FiguresResult(out_dir)
    previous: dict[str, Any] = {}
    if (out_dir / "manifest.json").is_file():
        previous = json.loads((out_dir / "manifest.json").read_text())
    if from_csv:
        for p in preset.csvs():
            want = (previous.get("csvs") or {}).get(str(p), {}).get("sha256")
            if not p.is_file() and preset.config.get("verdict"):
                console.print(f"[yellow]note:[/] {p} is missing: the verdict lists its cells as pending")
                continue
            if not p.is_file():
                raise GrammarError(f"--from-csv: {p} is missing; accepted: the CSVs named by the preset (run without --from-csv to create them)")
            if want and want != sha256(p):
                console.print(f"[yellow]note:[/] {p} differs from the manifest's (sha256 {want[:12]}…): figures will follow the CSV")
        result.commands = list(previous.get("commands") or [])
    else:
        result.commands = run_preset_cells(preset, console, progress=progress, dry_run=dry_run, launcher=launcher)
        if dry_run:
            return result
    result.files, _ = build_figures(preset, out_dir, console)
    result.manifest = write_manifest(preset, out_dir, result.files, result.commands)
    n = sum(1 for f in result.files if f.suffix == ".png")
    console.print(f"[bold]figures:[/] {n} figures (PNG + PDF + CSV subset), {sum(1 for f in result.files if f.suffix == '.tex')} LaTeX table(s), manifest -> {out_dir}/")
    return result
