"""The `elastic-bench` command line: parse arguments, build a config, call the library.

No logic lives here; every command is a thin wrapper over a function in ``elastic_bench``.
Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

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
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit (2 = bad input)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
# Efficiency benchmarks (issue #3): sweep, plot, report.  Logic lives in elastic_bench.bench.

SWEEP_HELP = """Efficiency sweep: time and measure memory of every (model x option x pass x dtype x seq len) cell.

Integer axes take 256 | 1k | 256,1k,4k | 256..8192 (powers of two) | 256..8192:x4 | 256..2048:+256
(k = 1024, m = 1024²).  ELASTIC-only axes (--experts, --memory-size, --topk, --option) are crossed
only with the backends that declare that option.  The expanded grid is printed first; --dry-run
stops there.  Rows are appended (fsync'ed) to --out; a rerun skips the cells already there.

Defaults on CPU: models = the registered ones of softmax, sdpa, linear, elastic, elastic-causal;
seq-len 256..8192, tokens-per-batch 4k (batch = 4096 // seq_len, at least 1), dtype fp32,
pass infer, repeats 5, min-time 0.2 s per cell, warmup 0 (the untimed FLOP-counting call
warms up), threads 1 (stable timings on a busy machine; --threads 0 = torch's default) —
about 2 minutes on a 2-core machine.
Defaults on GPU: every registered backend (unusable ones recorded as skipped), tokens-per-batch
64k, dtype bf16, pass infer,train_step, repeats 50, min-time 0.5 s, warmup 3.
Common: level model, d-model 64, heads 2, layers 2, n-items 3706, objective auto (all + last
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
    pass_: Optional[str] = typer.Option(None, "--pass", help="infer, fwd, fwd_bwd, train_step (comma list)"),
    level: Optional[str] = typer.Option(None, "--level", help="model (whole recommender) | op (attention module)"),
    objective: Optional[str] = typer.Option(None, "--objective", help="auto | all | last (backward passes)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda[:N]"),
    repeats: Optional[str] = typer.Option(None, "--repeats", help="max timed samples per cell"),
    min_time: Optional[str] = typer.Option(None, "--min-time", help="time budget per cell (s); stops after it with ≥ 3 samples"),
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
) -> None:
    from elastic_bench.bench.grammar import GrammarError
    from elastic_bench.bench.spec import load_spec
    from elastic_bench.bench.sweep import run_sweep

    given = dict(
        seq_len=seq_len, batch=batch, tokens_per_batch=tokens_per_batch, models=models, experts=experts,
        memory_size=memory_size, topk=topk, option=option, d_model=d_model, heads=heads, layers=layers,
        dtype=dtype, level=level, objective=objective, device=device, repeats=repeats, min_time=min_time,
        warmup=warmup, n_items=n_items, padding=padding, dropout=dropout, seed=seed, threads=threads, out=out, baseline=baseline,
        dry_run=dry_run, resume=resume, retry_errors=retry_errors, plot=plot,
    )  # fmt: skip
    given["pass"] = pass_
    try:
        spec = load_spec(given, config)
        run_sweep(spec, console)
    except GrammarError as exc:
        fail(str(exc))


@app.command()
def plot(
    results: str = typer.Argument(..., help="results CSV written by `elastic-bench sweep`"),
    baseline: str = typer.Option("softmax", "--baseline", help="model the speed-ups and memory reductions are against"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default reports/<csv stem>/)"),
) -> None:
    """Latency, speed-up, memory and memory-reduction figures (PNG + PDF + CSV subset) from a results CSV."""
    from elastic_bench.bench.grammar import GrammarError
    from elastic_bench.bench.plots import plot_results
    from elastic_bench.bench.sweep import default_report_dir

    try:
        files = plot_results([results], baseline=baseline, out_dir=out or default_report_dir(results))
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
    from elastic_bench.bench.grammar import GrammarError
    from elastic_bench.bench.report import write_report

    try:
        path = write_report(results, baseline=baseline, out_dir=out)
    except GrammarError as exc:
        fail(str(exc))
    console.print(f"report -> {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
