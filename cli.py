"""The `elastic-bench` command line: parse arguments, build a config, call the library.

No logic lives here; every command is a thin wrapper over a function in ``elastic_bench``.
Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import NoReturn

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
