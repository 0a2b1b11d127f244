"""``python -m elastic_bench.train [options of elastic-bench train]``: the `train` command, as a
module that ``torchrun`` can start on every rank::

    torchrun --nproc-per-node 8 -m elastic_bench.train --preset sasrec-ml1m --model elastic

Every rank trains (DistributedDataParallel); only rank 0 prints and writes results.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    import typer

    from cli import app

    from . import distributed

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    code: int | str | None = 0
    try:
        command.main(sys.argv[1:] if argv is None else argv, prog_name="python -m elastic_bench.train")
    except SystemExit as exc:
        code = exc.code
    finally:
        distributed.cleanup()
    status = code if isinstance(code, int) else (0 if code is None else 1)
    path = os.environ.get(distributed.EXIT_CODE_FILE_ENV)
    if status and path and distributed.is_main():
        try:
            with open(path, "w") as fh:  # for `elastic-bench train --nproc N`: torchrun only reports "failed"
                fh.write(str(status))
        except OSError:
            pass
    sys.exit(code)


if __name__ == "__main__":
    main()
