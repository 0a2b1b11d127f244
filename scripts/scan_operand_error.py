#!/usr/bin/env python3
"""Error of the Triton causal scan's forward against float64, by operand rounding (CPU).

The scan multiplies fp32 intermediates (softmax weights, packed dispatchers, folded unpack
terms) on tensor cores; for 16-bit inputs their operands are rounded first: tf32 (10
mantissa bits) now, bf16 (7 bits) before.  Triton's CPU interpreter multiplies fp32
operands exactly, so this script emulates the rounding (``causal_scan.EMULATE_BITS``) and
reports ``max|out - ref| / max|ref|`` and ``rms(out - ref) / rms(ref)`` over the positions at
or after a row's first real token, with
the reference the PyTorch scan in float64 on the same (rounded) inputs::

    TRITON_INTERPRET=1 OMP_NUM_THREADS=1 python scripts/scan_operand_error.py [--n 256]

Rows: fp16 inputs (output rounded to fp16 too) and fp32 inputs (the operand rounding alone),
each with exact fp32 operands (what the interpreter does), tf32 and bf16 operands.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("set TRITON_INTERPRET=1 (the kernels run in Triton's CPU interpreter)")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from elastic_bench.elastic import kernels  # noqa: E402
from elastic_bench.elastic.causal import causal_lda_scan as torch_scan  # noqa: E402

OPERANDS = {"fp32 (exact)": 0, "tf32": 10, "bf16": 7}


def inputs(dtype: torch.dtype, b: int, h: int, n: int, dh: int, k: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = dh**-0.5

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    lengths = torch.randint(n // 2, n + 1, (b,), generator=g)
    mask = torch.arange(n)[None, :] >= (n - lengths)[:, None]  # left padding
    return [r(1, h, k, dh, scale=s), r(b, h, n, dh), r(b, h, n, dh), mask, r(b, h, n, dh, scale=s),
            r(1, h, k, dh), r(1, h, k, dh), r(h, h, dh, dh, scale=s), r(h, h, dh, dh, scale=s)]


def errors(scan, ins: list[torch.Tensor], bits: int, chunk: int) -> tuple[float, float]:
    scan.EMULATE_BITS = bits
    try:
        with torch.no_grad():
            out = scan.causal_lda_scan(*ins, chunk_size=chunk).double()
    finally:
        scan.EMULATE_BITS = 0
    ref = torch_scan(*[t.double() if t.is_floating_point() else t for t in ins], chunk_size=chunk)
    real = ins[3].cummax(1).values[:, None, :, None].expand_as(ref)  # positions after a real token
    err = (out - ref)[real]
    ref = ref[real]
    return (err.abs().max() / ref.abs().max()).item(), (err.pow(2).mean() / ref.pow(2).mean()).sqrt().item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--b", type=int, default=2)
    ap.add_argument("--h", type=int, default=2)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--dh", type=int, default=32)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    scan = kernels.load("causal_scan")
    print(f"B={a.b} h={a.h} N={a.n} d_h={a.dh} k={a.k} chunk={a.chunk} seed={a.seed}; reference: PyTorch scan in float64")
    print("| inputs | operands of the fp32-intermediate products | max abs err / max abs ref | rms err / rms ref |")
    print("| --- | --- | --- | --- |")
    for dname, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        ins = inputs(dtype, a.b, a.h, a.n, a.dh, a.k, a.seed)
        for oname, bits in OPERANDS.items():
            mx, mean = errors(scan, ins, bits, a.chunk)
            print(f"| {dname} | {oname} | {mx:.2e} | {mean:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
