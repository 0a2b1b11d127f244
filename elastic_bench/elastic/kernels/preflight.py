"""Can Triton build and launch a kernel on this machine?  A one-second check before any timing.

Before its first launch of a kernel, Triton compiles a small C launcher with the host's C
compiler (``$CC``, else gcc or clang) against Python's headers (``Python.h``).  On a machine
without either, every kernel fails at its first call, after the setup and warm-up that
preceded it.  :func:`preflight` finds out first:

1. :func:`launcher_build_reason`: build a trivial C extension that includes ``Python.h``
   with Triton's own build function (the same compiler lookup and include directories as
   the launcher's); skipped under the interpreter, which builds nothing;
2. :func:`kernel_launch_reason`: compile and launch a trivial kernel (``x += 1``) on the
   device and check what it wrote.

Each returns ``''`` when it passes, else a one-line reason.  From the shell::

    python -m elastic_bench.elastic.kernels.preflight [--device cuda]   # exit 0, or 3 with the reason
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid

import torch
import triton
import triton.language as tl

from . import interpret_mode

INTERPRETED = interpret_mode()
EXIT_CODE = 3  # the environment cannot run the kernels (2 stays for bad arguments)


@triton.jit
def _add_one(X, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    keep = offs < n
    tl.store(X + offs, tl.load(X + offs, mask=keep) + 1.0, mask=keep)


def python_include_dir() -> str:
    """Where Triton's build looks for ``Python.h`` (its scheme choice, Debian's included)."""
    scheme = sysconfig.get_default_scheme()
    if scheme == "posix_local":
        scheme = "posix_prefix"
    return sysconfig.get_paths(scheme=scheme)["include"]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or shutil.which("cc")


def _build_extension(src: str, name: str) -> None:
    """Build ``src`` as extension ``name`` the way Triton builds its launchers."""
    try:
        from triton.runtime.build import compile_module_from_src
    except ImportError:  # an older triton: the same command, by hand
        cc = _compiler()
        if cc is None:
            raise RuntimeError("Failed to find C compiler") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.c")
            with open(path, "w") as fh:
                fh.write(src)
            so = os.path.join(tmp, name + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            cmd = [cc, path, "-O3", "-shared", "-fPIC", "-o", so, f"-I{python_include_dir()}"]
            subprocess.check_call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return
    compile_module_from_src(src, name)


def launcher_build_reason() -> str:
    """'' if a C extension that includes ``Python.h`` builds as Triton's launchers do, else why not."""
    name = f"elastic_bench_preflight_{uuid.uuid4().hex[:12]}"  # fresh: never served from Triton's cache
    src = (
        "#include <Python.h>\n"
        f"static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, \"{name}\", NULL, -1, NULL}};\n"
        f"PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}\n"
    )
    try:
        _build_extension(src, name)
    except Exception as exc:  # noqa: BLE001 - every failure is a reason
        cc = _compiler()
        inc = python_include_dir()
        if cc is None:
            return "Triton cannot build its launcher: no C compiler (set CC, or install gcc or clang)"
        if not os.path.isfile(os.path.join(inc, "Python.h")):
            return f"Triton cannot build its launcher: no Python.h in {inc} (install the Python development headers, e.g. python3-dev)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"Triton cannot build its launcher with {cc}: {type(exc).__name__}: {first}"[:400]
    return ""


def kernel_launch_reason(device: torch.device | str) -> str:
    """'' if a trivial kernel compiles, launches on ``device`` and writes the right values."""
    device = torch.device(device)
    try:
        x = torch.arange(20, dtype=torch.float32, device=device)
        _add_one[(1,)](x, x.numel(), BLOCK=32)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if not torch.equal(x.cpu(), torch.arange(20, dtype=torch.float32) + 1):
            return f"a trivial Triton kernel ran on {device} but wrote wrong values"
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"a trivial Triton kernel failed on {device}: {type(exc).__name__}: {first}"[:400]
    return ""


def preflight(device: torch.device | str) -> str:
    """'' when Triton can build launchers (unless interpreting) and run a kernel on ``device``."""
    if not INTERPRETED:
        why = launcher_build_reason()
        if why:
            return why
    return kernel_launch_reason(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    why = preflight(args.device)
    if why:
        print(f"preflight failed: {why}", file=sys.stderr)
        return EXIT_CODE
    how = "the interpreter builds no launcher" if INTERPRETED else "it builds launchers"
    print(f"preflight ok: Triton {triton.__version__} ran a kernel on {args.device} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
