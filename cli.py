"""The `elastic-bench` command line: parse arguments, build a config, call the library.

No logic lives here; every command is a thin wrapper over a function in ``elastic_bench``.
Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from typing import List, NoReturn, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="elastic-bench",
    help="ELASTIC vs softmax, FlashAttention, xformers, linear and low-rank attention in one recommender: "
    "efficiency sweeps, accuracy, plots and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# no emoji codes: labels such as "sampled:100:uniform" must print as typed (markup is escaped where printed)
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit (2 = bad input)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def allow_dirty_writes(allow: bool) -> None:
    """``--allow-dirty``: curated results may be appended to from an uncommitted tree."""
    if allow:
        from elastic_bench.provenance import ALLOW_DIRTY_ENV

        os.environ[ALLOW_DIRTY_ENV] = "1"


def checked_launcher(name: str, ray_address: str | None, ray_cpus: int | None):
    """The launcher of --launcher, validated before anything else (a bad one exits 2 at once);
    a ray launcher starts or joins its cluster only when used (``with``)."""
    from elastic_bench.runs.launch import get_launcher

    try:
        return get_launcher(name, ray_address, ray_cpus)
    except ValueError as exc:
        fail(str(exc))


def use_launcher(runner, idle: bool = False):
    """``runner`` as a context manager, or the local one for a dry run (no cluster to start)."""
    from elastic_bench.runs.launch import LocalLauncher

    return LocalLauncher() if idle else runner


@app.command()
def doctor() -> None:
    """Every registered backend, usable here or not and why; device and package versions."""
    from elastic_bench.doctor import doctor_report

    doctor_report(console)


@app.command("list")
def list_(what: str = typer.Argument("all", help="models | presets | datasets | all")) -> None:
    """List models (attention backends), presets and datasets."""
    from elastic_bench.doctor import list_report

    if what not in ("all", "models", "presets", "datasets"):
        fail(f"list: unknown category {what!r}; accepted: models, presets, datasets, all")
    list_report(console, what)


# ----------------------------------------------------------------------------------------
# Efficiency benchmarks (issue #3): sweep, plot, report.  Logic lives in elastic_bench.runs (sweep)
# and elastic_bench.report (plot, report).

SWEEP_HELP = """Efficiency sweep: time and measure memory of every (model x option x pass x dtype x seq len) cell.

Passes: infer is the throughput regime (every position in every layer at the tokens-per-batch
budget, then the last position kept).  serve and serve_step are the serving regime (model level,
batch 1 unless --batch): serve computes the last position with the last layer's one query;
serve_step appends one item to a per-user state built untimed from a --seq-len history (KV cache,
running state or recompute: backend_detail says which) and records state_bytes_per_user.

Integer axes take 256 | 1k | 256,1k,4k | 256..8192 (powers of two) | 256..8192:x4 | 256..2048:+256
(k = 1024, m = 1024²).  ELASTIC-only axes (--experts, --memory-size, --topk, --option) are crossed
only with the backends that declare that option.  The expanded grid is printed first; --dry-run
stops there.  Rows are appended (fsync'ed) to --out; a rerun skips the cells already there.

Defaults on CPU: models = the registered ones of softmax, sdpa, linear, elastic, elastic-causal, no-mixing (the floor);
seq-len 256..8192, tokens-per-batch 4k (batch = 4096 // seq_len, at least 1), dtype fp32,
pass infer, repeats 200 (the cap), min-time 1.0 s of samples and at least 10 of them, max-time 3.0 s
(a slower cell stops with 3 samples), warmup 0 calls after the untimed FLOP-counting one and at least
0.5 s, process-repeats 3 (cells at the longest seq-len: 3 interleaved rounds, each in a fresh
process; --interleave-calls also times the cells of one shape call by call together, so that their
ratios pair sample by sample), threads 1 (stable timings on a busy machine; --threads 0 = torch's default).
Defaults on GPU: every registered backend (unusable ones recorded as skipped), tokens-per-batch
64k, dtype bf16, pass infer,train_step, repeats 1000, min-time 1.0 s, max-time 30 s, warmup 3.
Common: level model, causal auto (each backend in every causality it supports: causal and
non-causal softmax/sdpa/linear, non-causal elastic, causal elastic-causal; reports compare only
rows of the same causality), d-model 64, heads 2, layers 2, n-items 3706, objective auto (all + last
for causal models, last for the others), padding full, dropout 0, out results/sweep-<device>.csv,
plots to reports/<csv stem>/.
"""


@app.command(help=SWEEP_HELP)
def sweep(
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="sequence lengths, e.g. 256..8192"),
    batch: Optional[str] = typer.Option(None, "--batch", help="batch sizes (exclusive with --tokens-per-batch)"),
    tokens_per_batch: Optional[str] = typer.Option(None, "--tokens-per-batch", help="batch = tokens // seq_len (min 1)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma list of backends, or 'all'"),
    experts: Optional[str] = typer.Option(None, "--experts", help="ELASTIC interest experts k (≤ seq len)"),
    memory_size: Optional[str] = typer.Option(None, "--memory-size", help="IMR slots, perfect squares: 0, 1k, 4k, 16k, 64k, 256k, 1m"),
    topk: Optional[str] = typer.Option(None, "--topk", help="IMR slots retrieved"),
    option: Optional[List[str]] = typer.Option(None, "--option", help="any backend option axis NAME=VALUES (repeatable)"),
    d_model: Optional[str] = typer.Option(None, "--d-model", help="model width(s)"),
    heads: Optional[str] = typer.Option(None, "--heads", help="attention heads"),
    layers: Optional[str] = typer.Option(None, "--layers", help="blocks"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32 | fp16 | bf16 | fp64 (comma list)"),
    pass_: Optional[str] = typer.Option(
        None, "--pass", help="infer (throughput: all positions), fwd, fwd_bwd, train_step, serve (last query only), serve_step (one appended item) (comma list)"
    ),
    level: Optional[str] = typer.Option(None, "--level", help="model (whole recommender) | op (attention module)"),
    objective: Optional[str] = typer.Option(None, "--objective", help="auto | all | last (backward passes)"),
    causal: Optional[str] = typer.Option(None, "--causal", help="auto (every causality a backend supports) | yes | no"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda[:N]"),
    repeats: Optional[str] = typer.Option(None, "--repeats", help="cap on timed samples per cell"),
    min_time: Optional[str] = typer.Option(None, "--min-time", help="seconds of samples per cell, at least (and ≥ 10 samples)"),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="a slow cell stops sampling after this many seconds, with ≥ 3 samples"),
    process_repeats: Optional[str] = typer.Option(None, "--process-repeats", help="headline cells (the longest --seq-len): interleaved repeats, each in a fresh process (default 3; 1 = off)"),
    interleave_calls: Optional[bool] = typer.Option(
        None, "--interleave-calls/--no-interleave-calls",
        help="headline cells: time the cells of one workload shape call by call together, for paired ratios (default off)",
    ),
    warmup: Optional[str] = typer.Option(None, "--warmup", help="untimed calls after the first (FLOP-counting, also untimed) call"),
    n_items: Optional[str] = typer.Option(None, "--n-items", help="catalogue size"),
    padding: Optional[str] = typer.Option(None, "--padding", help="full | random (lengths uniform in 1..N, left-padded)"),
    dropout: Optional[str] = typer.Option(None, "--dropout", help="dropout during fwd/bwd passes"),
    seed: Optional[str] = typer.Option(None, "--seed"),
    threads: Optional[str] = typer.Option(None, "--threads", help="CPU intra-op threads (0 = torch's default; CPU default 1)"),
    out: Optional[str] = typer.Option(None, "--out", help="results CSV (default results/sweep-<device>.csv)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="baseline of the end-of-sweep plots"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file of these options; the CLI overrides it"),
    dry_run: Optional[bool] = typer.Option(None, "--dry-run", help="print the grid and stop"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="skip cells already in --out (default on)"),
    retry_errors: Optional[bool] = typer.Option(None, "--retry-errors", help="rerun cells whose status is error:* or skipped:*"),
    plot: Optional[bool] = typer.Option(None, "--plot/--no-plot", help="write figures to reports/<csv stem>/ at the end (default on)"),
    launcher: str = typer.Option("local", "--launcher", help="local (this process) | ray (each cell a Ray task; pip install 'elastic-bench[distributed]')"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: a running cluster (auto | host:port; or $RAY_ADDRESS); default: start a local one"),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", help="ray: CPUs of the local cluster it starts (default: all)"),
    task: str = typer.Option("efficiency", "--task", help="efficiency (latency/memory) | accuracy (train + evaluate each cell)"),
    data: Optional[str] = typer.Option(None, "--data", help="accuracy: named dataset, file, or synthetic[:k=v,...]"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="accuracy: folder of named datasets (or $ELASTIC_BENCH_DATA)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="accuracy: training preset of every cell (default quick)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="accuracy: seeds, e.g. 0,1,2 or 0..4:+1"),
    max_len: Optional[str] = typer.Option(None, "--max-len", help="accuracy: max sequence lengths (items kept per user)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="accuracy: epochs per cell (default: the preset's)"),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="write to a curated (git-tracked) results file from an uncommitted tree"),
) -> None:
    allow_dirty_writes(allow_dirty)
    from elastic_bench.grammar import GrammarError
    from elastic_bench.runs.spec import load_spec
    from elastic_bench.runs.sweep import run_sweep

    runner0 = checked_launcher(launcher, ray_address, ray_cpus)

    if task == "accuracy":
        efficiency_only = dict(causal=causal, process_repeats=process_repeats, interleave_calls=interleave_calls, max_time=max_time, seq_len=seq_len, batch=batch, tokens_per_batch=tokens_per_batch, dtype=dtype, pass_=pass_, level=level,
                               repeats=repeats, min_time=min_time, warmup=warmup, n_items=n_items, padding=padding, threads=threads)  # fmt: skip
        given_eff = [k.rstrip("_").replace("_", "-") for k, v in efficiency_only.items() if v is not None]
        if given_eff:
            fail(f"--task accuracy: --{', --'.join(given_eff)} only apply to --task efficiency (use --max-len for lengths)")
        from elastic_bench.runs.accuracy import run_accuracy_sweep
        from elastic_bench.runs.accuracy_spec import accuracy_spec

        try:
            aspec = accuracy_spec(
                models=models, experts=experts, memory_size=memory_size, topk=topk, option=option, seeds=seeds or seed,
                max_len=max_len, d_model=d_model, heads=heads, layers=layers, objective=objective, dropout=dropout, device=device,
                data=data, data_dir=data_dir, preset=preset, epochs=epochs, out=out, resume=resume, dry_run=dry_run, plot=plot,
            )  # fmt: skip
            with use_launcher(runner0, aspec.dry_run) as runner:
                run_accuracy_sweep(aspec, console, launcher=runner)
        except (GrammarError, ValueError) as exc:
            fail(str(exc))
        return
    if task != "efficiency":
        fail(f"--task {task}: accepted: efficiency, accuracy")
    accuracy_only = dict(data=data, data_dir=data_dir, preset=preset, seeds=seeds, max_len=max_len, epochs=epochs)
    given_acc = [k.replace("_", "-") for k, v in accuracy_only.items() if v is not None]
    if given_acc:
        fail(f"--{', --'.join(given_acc)}: only with --task accuracy")

    given = dict(
        seq_len=seq_len, batch=batch, tokens_per_batch=tokens_per_batch, models=models, experts=experts,
        memory_size=memory_size, topk=topk, option=option, d_model=d_model, heads=heads, layers=layers,
        dtype=dtype, level=level, objective=objective, causal=causal, device=device, repeats=repeats, min_time=min_time, max_time=max_time,
        warmup=warmup, n_items=n_items, padding=padding, dropout=dropout, seed=seed, threads=threads, out=out, baseline=baseline,
        process_repeats=process_repeats, interleave_calls=interleave_calls,
        dry_run=dry_run, resume=resume, retry_errors=retry_errors, plot=plot,
    )  # fmt: skip
    given["pass"] = pass_
    try:
        spec = load_spec(given, config)
        with use_launcher(runner0, spec.dry_run) as runner:
            run_sweep(spec, console, launcher=runner)
    except (GrammarError, ValueError) as exc:
        fail(str(exc).splitlines()[0])


@app.command()
def plot(
    results: str = typer.Argument(..., help="results CSV written by `elastic-bench sweep`"),
    baseline: str = typer.Option("softmax", "--baseline", help="model the speed-ups and memory reductions are against"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default reports/<csv stem>/)"),
) -> None:
    """Figures (PNG + PDF + CSV subset) from a results CSV: latency, speed-up, memory and memory
    reduction of efficiency rows; accuracy per model (mean ± std over seeds) and vs max length."""
    from elastic_bench.grammar import GrammarError
    from elastic_bench.report.plots import plot_results
    from elastic_bench.report.figure_kit import default_report_dir

    from elastic_bench.report.accuracy_plots import plot_accuracy

    try:
        files = plot_results([results], baseline=baseline, out_dir=out or default_report_dir(results))
        files += plot_accuracy([results], out or default_report_dir(results))
    except GrammarError as exc:
        fail(str(exc))
    console.print(f"{len([f for f in files if f.suffix == '.png'])} figures -> {out or default_report_dir(results)}/")


@app.command()
def report(
    results: List[str] = typer.Argument(..., help="one or more results CSVs"),
    baseline: str = typer.Option("softmax", "--baseline", help="model the speed-ups and memory reductions are against"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default reports/<csv stems>/)"),
) -> None:
    """Markdown report (tables, figures, ELASTIC claim check) in reports/<name>/report.md."""
    from elastic_bench.grammar import GrammarError
    from elastic_bench.report.markdown import write_report

    try:
        path = write_report(results, baseline=baseline, out_dir=out)
    except GrammarError as exc:
        fail(str(exc))
    console.print(f"report -> {path}")


@app.command()
def train(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", help="attention backend (elastic-bench list models); default: the preset's"),
    data: Optional[str] = typer.Option(None, "--data", help="named dataset (ml-1m, beauty, sports), a file, or synthetic[:k=v,...]"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder of named datasets (or $ELASTIC_BENCH_DATA)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="auto | seq | movielens | table"),
    preset: str = typer.Option("quick", "--preset", help="sasrec-ml1m | quick (elastic-bench list presets)"),
    max_len: Optional[int] = typer.Option(None, "--max-len"),
    d_model: Optional[int] = typer.Option(None, "--d-model"),
    heads: Optional[int] = typer.Option(None, "--heads"),
    layers: Optional[int] = typer.Option(None, "--layers"),
    dropout: Optional[float] = typer.Option(None, "--dropout"),
    block: Optional[str] = typer.Option(None, "--block", help="pre-ln | sasrec (SASRec's block: queries-only LayerNorm, no final LayerNorm, xavier init)"),
    experts: Optional[int] = typer.Option(None, "--experts", help="ELASTIC interest experts k"),
    memory_size: Optional[str] = typer.Option(None, "--memory-size", help="ELASTIC IMR slots (perfect square: 0, 1k, 4k, 16k, 64k, 256k, 1m)"),
    topk: Optional[int] = typer.Option(None, "--topk", help="ELASTIC IMR sub-key top-k"),
    objective: Optional[str] = typer.Option(None, "--objective", help="auto | all (causal models only) | last"),
    causal: Optional[bool] = typer.Option(None, "--causal/--non-causal", help="attention causality (default: causal when the backend can be); --non-causal needs --objective last"),
    loss: Optional[str] = typer.Option(None, "--loss", help="full | sampled"),
    negatives: Optional[int] = typer.Option(None, "--negatives", help="sampled softmax negatives"),
    negatives_per: Optional[str] = typer.Option(None, "--negatives-per", help="sampled softmax: sequence | position"),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    l2_norm: Optional[bool] = typer.Option(None, "--l2-norm/--no-l2-norm", help="cosine scores"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    clip: Optional[float] = typer.Option(None, "--clip", help="gradient-norm clip (0 = off)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    patience: Optional[int] = typer.Option(None, "--patience", help="evaluations without improvement before stopping (0 = never)"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="wall-clock budget"),
    eval_protocol: Optional[str] = typer.Option(None, "--eval", help="full | sampled:N[:uniform|pop] (labelled in every output)"),
    exclude_history: Optional[str] = typer.Option(None, "--exclude-history", help="none | input (the input window) | all: seen items removed from the ranking"),
    train_on_valid: Optional[bool] = typer.Option(None, "--train-on-valid/--no-train-on-valid", help="reproduction mode: train on s[:-1], report test at the last epoch"),
    last_cuts: Optional[int] = typer.Option(None, "--last-cuts", help="objective last: random prefixes per user per epoch"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda"),
    out: str = typer.Option("results/train.csv", "--out", help="results CSV (a row is appended); metrics JSON beside it"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="checkpoint file (written every epoch)"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from --checkpoint if it exists"),
    nproc: int = typer.Option(1, "--nproc", help="processes (DistributedDataParallel; one per GPU on CUDA), started through torchrun on this node"),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="write to a curated (git-tracked) results file from an uncommitted tree"),
) -> None:
    """Train one backend in the recommender and evaluate it (full-catalogue ranking by default).

    Prints and saves the test metrics at the epoch of the best validation NDCG@10: a JSON file
    and one row of the sweep's CSV schema (task=accuracy).  --nproc N trains with N processes
    (global batch unchanged); `torchrun ... -m elastic_bench.train` takes the same options."""
    allow_dirty_writes(allow_dirty)
    from elastic_bench.train import distributed

    if nproc != 1:
        from elastic_bench.environment import resolve_device
        from elastic_bench.presets import train_preset

        try:
            distributed.check_nproc(nproc, resolve_device(device or train_preset(preset).device).type)
        except ValueError as exc:
            fail(str(exc).splitlines()[0])
        if nproc > 1:
            raise typer.Exit(distributed.launch(nproc, _given_options(ctx, drop=("nproc",))))

    from elastic_bench.train.run import run_training

    values = dict(
        model=model, data=data, fmt=fmt, max_len=max_len, d_model=d_model, heads=heads, layers=layers, dropout=dropout, block=block,
        experts=experts, memory_size=memory_size, topk=topk, objective=objective, causal=causal, loss=loss, negatives=negatives,
        temperature=temperature, negatives_per=negatives_per, l2_norm=l2_norm, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_steps=warmup_steps, clip=clip, epochs=epochs, patience=patience, max_minutes=max_minutes,
        eval=eval_protocol, exclude_history=exclude_history, train_on_valid=train_on_valid, last_cuts=last_cuts,
        seed=seed, device=device,
    )  # fmt: skip
    try:
        run_training(preset, {k: v for k, v in values.items() if v is not None}, data_dir, out, checkpoint, resume, console)
    except ValueError as exc:
        if not distributed.is_main():  # every rank meets the same error: rank 0 says it
            raise typer.Exit(2)
        fail(str(exc).splitlines()[0])


def _given_options(ctx: typer.Context, drop: tuple[str, ...] = ()) -> List[str]:
    """The options given on this command line, as arguments again (for a re-launch)."""
    args: List[str] = []
    for p in ctx.command.params:  # (typer may bring its own copy of click: no isinstance checks)
        if getattr(p, "param_type_name", "") != "option" or p.name in drop or p.name not in ctx.params:
            continue
        source = ctx.get_parameter_source(p.name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[p.name]
        if p.is_flag:
            if p.secondary_opts:
                args.append(p.opts[0] if value else p.secondary_opts[0])
            elif value:
                args.append(p.opts[0])
        elif value is not None:
            args += [p.opts[0], str(value)]
    return args


# ----------------------------------------------------------------------------------------
# Ablations and paper figures (issue #5).  Logic lives in elastic_bench.runs.ablation / .figures.

ABLATE_HELP = """Ablate one ELASTIC axis: an accuracy sweep AND an efficiency sweep of the same configurations.

AXIS: experts | memory-size | topk | layers | heads | causal | query-pool.  Both halves append to ONE
results CSV (default results/ablate-<axis>-<data>.csv; task=accuracy and task=efficiency rows, joinable
on model + options + d_model/heads/layers); a rerun only runs the missing cells.  The efficiency half
times `infer` at the accuracy runs' max length (or --seq-len) on the dataset's catalogue size.
Figures (ablation curves with accuracy and latency on twin axes; parameters/memory bank and FLOPs)
go to reports/<csv stem>/.

Examples:  elastic-bench ablate memory-size --values 0,1k,4k,16k --data ml-1m --seeds 0,1,2
           elastic-bench ablate causal --values elastic,elastic-causal --data synthetic --epochs 2
"""


@app.command(help=ABLATE_HELP)
def ablate(
    axis: str = typer.Argument(..., help="experts | memory-size | topk | layers | heads | causal | query-pool"),
    values: str = typer.Option(..., "--values", help="values of the axis, e.g. 0,1k,4k (memory-size), 4..32 (experts), mean,last"),
    data: Optional[str] = typer.Option(None, "--data", help="named dataset, file, or synthetic[:k=v,...] (default: the preset's)"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder of named datasets (or $ELASTIC_BENCH_DATA)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="accuracy seeds, e.g. 0,1,2 (default 0)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="training preset of every accuracy cell (default quick)"),
    models: Optional[str] = typer.Option(None, "--models", help="backends (default elastic; causal axis: its values)"),
    option: Optional[List[str]] = typer.Option(None, "--option", help="fixed backend option NAME=VALUE for both halves (repeatable)"),
    seq_len: Optional[str] = typer.Option(None, "--seq-len", help="efficiency half: lengths (default: the accuracy max length)"),
    max_len: Optional[str] = typer.Option(None, "--max-len", help="accuracy half: max sequence length"),
    d_model: Optional[str] = typer.Option(None, "--d-model"),
    heads: Optional[str] = typer.Option(None, "--heads"),
    layers: Optional[str] = typer.Option(None, "--layers"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="accuracy: epochs per cell (default: the preset's)"),
    pass_: Optional[str] = typer.Option(None, "--pass", help="efficiency passes (default infer)"),
    repeats: Optional[str] = typer.Option(None, "--repeats", help="efficiency: max timed samples per cell"),
    min_time: Optional[str] = typer.Option(None, "--min-time", help="efficiency: time budget per cell (s)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda[:N]"),
    out: Optional[str] = typer.Option(None, "--out", help="results CSV of both halves"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="skip cells already in --out (default on)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print both grids and stop"),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="write the ablation figures at the end"),
    launcher: str = typer.Option("local", "--launcher", help="local (this process) | ray (each cell a Ray task; pip install 'elastic-bench[distributed]')"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: a running cluster (auto | host:port; or $RAY_ADDRESS); default: start a local one"),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", help="ray: CPUs of the local cluster it starts (default: all)"),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="write to a curated (git-tracked) results file from an uncommitted tree"),
) -> None:
    allow_dirty_writes(allow_dirty)
    from elastic_bench.runs.ablation import ablation_spec, run_ablation
    from elastic_bench.grammar import GrammarError

    runner0 = checked_launcher(launcher, ray_address, ray_cpus)

    eff = {k: v for k, v in {"pass": pass_, "repeats": repeats, "min_time": min_time}.items() if v is not None}
    try:
        spec = ablation_spec(
            axis, values, data=data, data_dir=data_dir, seeds=seeds, preset=preset, models=models, option=option, seq_len=seq_len,
            max_len=max_len, d_model=d_model, heads=heads, layers=layers, epochs=epochs, efficiency=eff or None, device=device,
            out=out, resume=resume, dry_run=dry_run, plot=plot,
        )  # fmt: skip
        with use_launcher(runner0, dry_run) as runner:
            run_ablation(spec, console, launcher=runner)
    except (GrammarError, ValueError) as exc:
        fail(str(exc).splitlines()[0])


@app.command()
def figures(
    preset: str = typer.Option(..., "--preset", help="figure preset: cpu-small | paper | path/to/preset.yaml"),
    from_csv: bool = typer.Option(False, "--from-csv", help="no training or timing: rebuild every figure and table from the CSVs"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder of named datasets (or $ELASTIC_BENCH_DATA)"),
    out: str = typer.Option("reports", "--out", help="figures go to <out>/<preset name>/"),
    results_dir: str = typer.Option("results", "--results", help="CSVs go to <results>/<preset name>/ unless the preset says"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every grid and stop"),
    launcher: str = typer.Option("local", "--launcher", help="local (this process) | ray (each cell a Ray task; pip install 'elastic-bench[distributed]')"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: a running cluster (auto | host:port; or $RAY_ADDRESS); default: start a local one"),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", help="ray: CPUs of the local cluster it starts (default: all)"),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="write to a curated (git-tracked) results file from an uncommitted tree"),
) -> None:
    """Paper figures in one command: run the preset's missing cells (resumable), then write every figure
    (PNG + PDF + CSV subset), a LaTeX table (booktabs, mean ± std over seeds, best in bold) and
    manifest.json (commands, configs, environment, CSV sha256) into reports/<preset>/.
    Presets are YAML files in elastic_bench/figure_presets/ (copy one to make your own)."""
    allow_dirty_writes(allow_dirty)
    from elastic_bench.runs.figures import run_figures
    from elastic_bench.grammar import GrammarError

    runner0 = checked_launcher(launcher, ray_address, ray_cpus)

    try:
        with use_launcher(runner0, dry_run or from_csv) as runner:
            run_figures(
                preset, from_csv=from_csv, out_root=out, results_root=results_dir, console=console, dry_run=dry_run, data_dir=data_dir, launcher=runner
            )
    except (GrammarError, ValueError) as exc:
        fail(str(exc).splitlines()[0])


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
