"""The chunk-size table of docs/kernels.md ("PyTorch causal scan"): the chunk-parallel scan
against the chunk loop it replaced, interleaved, 1 thread, fp32, CPU time of the scan alone.

    OMP_NUM_THREADS=1 python scripts/bench_causal_scan.py --shape small --chunks 8,16,32,64
    OMP_NUM_THREADS=1 python scripts/bench_causal_scan.py --shape long --chunks 32 --rounds 3

Inputs: 0.5·randn, shared dispatchers ``q1, ck, cv [1, h, k, d_h]``, the first 10 % of every
row padding.  One warm-up call per variant, then rounds that call each variant once in turn;
the minimum over rounds of ``time.thread_time`` (robust on a shared machine) is printed, for
the forward under ``torch.inference_mode()`` and for ``scan(...).sum().backward()``.
"""

from __future__ import annotations

import argparse
import time

import torch

from elastic_bench.elastic.causal import causal_lda_scan, causal_lda_scan_sequential

SHAPES = {"small": (16, 2, 256, 32, 32), "long": (1, 2, 8192, 32, 32), "train": (128, 2, 200, 32, 32)}  # B, h, N, d_h, k


def inputs(b: int, h: int, n: int, dh: int, k: int, grad: bool) -> tuple:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.5).requires_grad_(grad)

    q1, k1, v1, q2 = r(1, h, k, dh), r(b, h, n, dh), r(b, h, n, dh), r(b, h, n, dh)
    ck, cv, gk, gv = r(1, h, k, dh), r(1, h, k, dh), r(h, h, dh, dh), r(h, h, dh, dh)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, : n // 10] = False
    return q1, k1, v1, mask, q2, ck, cv, gk, gv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--chunks", default="32", help="chunk sizes of the chunk-parallel scan, e.g. 8,16,32,64")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    variants = {"previous scan (c=32)": lambda *a: causal_lda_scan_sequential(*a, chunk_size=32)}
    for c in (int(x) for x in args.chunks.split(",")):
        variants[f"chunk-parallel c={c}"] = lambda *a, c=c: causal_lda_scan(*a, chunk_size=c)
    shape = SHAPES[args.shape]
    for mode in ("forward", "forward+backward"):
        a = inputs(*shape, grad=mode != "forward")

        def call(f):
            if mode == "forward":
                with torch.inference_mode():
                    f(*a)
            else:
                f(*a).sum().backward()

        times: dict[str, list[float]] = {name: [] for name in variants}
        for f in variants.values():
            call(f)
        for _ in range(args.rounds):
            for name, f in variants.items():
                t0 = time.thread_time()
                call(f)
                times[name].append((time.thread_time() - t0) * 1e3)
        base = min(times["previous scan (c=32)"])
        for name, ts in times.items():
            print(f"B,h,N,d_h,k={shape} {mode:17s} {name:22s} {min(ts):9.1f} ms  ×{base / min(ts):.1f}", flush=True)


if __name__ == "__main__":
    main()
