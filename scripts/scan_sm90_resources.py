#!/usr/bin/env python3
"""Compile the causal scan's ``_scan_fwd`` for sm_90 (no GPU needed) and print its resource use.

Uses triton's bundled ptxas and cuobjdump: registers, stack (spill) bytes per thread and
shared memory, for fp16 inputs, C = 32, 8 warps, one stage, segment start states and saved
states on (the configuration the GPU runs under autograd)::

    OMP_NUM_THREADS=1 python scripts/scan_sm90_resources.py      # about a minute per build
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from elastic_bench.elastic.kernels import causal_scan  # noqa: E402

POINTERS = {"Q1", "K1", "V1", "Q2", "CK", "CV", "GK", "GV", "OUT"}
STATES = {"SM", "SL", "SACC", "IM", "IL", "IACC", "VM", "VL", "VACC"}


def build(dtype: str, block_k: int, block_d: int, idx64: bool, chunk: int = 32) -> str:
    fn = causal_scan._scan_fwd
    consts = dict(C=chunk, BLOCK_K=block_k, BLOCK_D=block_d, PREC="ieee" if dtype == "fp32" else "tf32", ROUND=0,
                  HAS_INIT=True, SAVE=True, IDX64=idx64, FALLBACK=True)
    sig = {}
    for name in fn.arg_names:
        if name in POINTERS:
            sig[name] = f"*{dtype}"
        elif name == "MASK":
            sig[name] = "*u8"
        elif name in STATES:
            sig[name] = "*fp32"
        elif name == "thr":
            sig[name] = "fp32"
        elif name in consts:
            sig[name] = "constexpr"
        else:
            sig[name] = "i32"
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8, num_stages=1))
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        res = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    return f"{m.group(0)} dynamic_shared={kernel.metadata.shared}" if m else res.strip()[-300:]


def main() -> int:
    for bk in (32, 64):
        for idx64 in (False, True):
            print(f"fp16 k=d_h={bk} C=32 IDX64={idx64}: {build('fp16', bk, bk, idx64)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
