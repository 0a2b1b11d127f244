#!/usr/bin/env python3
"""GPU check of ELASTIC's Triton kernels (issue #6): correctness, timing, traffic floor, model level.

One prepared script for an H100/H200 (torch ≥ 2.4 with CUDA, triton ≥ 3.0, no network),
run from the repository root::

    python scripts/gpu_check_kernels.py            # CSV to $OUT (or ./results), budget 4 min

First a preflight (:mod:`elastic_bench.elastic.kernels.preflight`, about a second): Triton
must build its C launcher (a C compiler and ``Python.h``) and run a trivial kernel; if it
cannot, the script prints ``preflight failed: <reason>`` and exits with code 3 before
anything is timed or written.  Then the sections, in order of importance, so that the time
budget cuts the least important rows; each row is flushed to the CSV as soon as it is
measured (a crash loses one row), and names the path that ran in ``backend_detail``:

1. ``env``: card, versions, and the measured device-to-device copy bandwidth (bytes read
   + written per second over a 2 GiB copy): the ceiling of the memory-traffic floors.
2. ``check``: every kernel against its PyTorch reference (fp32 PyTorch on the same
   rounded inputs), forward and every input gradient, in bf16 / fp16 / fp32 at realistic
   shapes; padding on the left with an all-pad row.  ``max_rel_err`` = max|kernel - ref| /
   max|ref|, against METHODOLOGY.md's tolerances (fp32 1e-4, 16-bit 2e-2).  A kernel that
   fails is ``incorrect`` and is not timed.
3. ``model``: the issue's targets: ELASTIC vs the same recommender with ``sdpa-flash`` and
   ``softmax`` at N = 8192, bf16, batch × seq = 64k tokens (B = 8), d = 64, h = 2, k = 32,
   2 layers, full-length sequences (sdpa-flash's CUDA kernel takes no padding mask),
   dropout 0 (the kernels have no attention dropout), 3706 items, full softmax loss;
   ``infer`` (last position, inference mode) and ``train_step`` (forward, loss, backward,
   AdamW step) with peak memory (METHODOLOGY.md's protocol).  ``elastic`` is compared
   under the ``last`` objective and ``elastic-causal`` under ``all``, each with the
   kernels (``ELASTIC_BENCH_KERNELS=auto``) and with the PyTorch path (``=torch``).  Two
   more ``train_step`` rows time ELASTIC as the trainer runs it (fp32 weights, bf16
   autocast, dropout 0.2): the kernels have no attention dropout, so ``backend_detail``
   says ``torch:…`` there and the note gives the reason.
4. ``op``: the kernels against the PyTorch paths (SDPA pack/unpack, the chunked scan,
   torch.topk retrieval) with ``triton.testing.do_bench`` (median, p20, p80; L2 flushed).
   Forward rows carry the memory-traffic floor: the bytes the op must move at least
   (read k1, v1, q2, write the output, and the mask) / copy bandwidth, and
   ``floor_frac`` = floor / measured.  ``layer`` rows do the same for one whole LDA layer
   forward (floor: read X, write the output).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from elastic_bench.elastic import kernels  # noqa: E402
from elastic_bench.elastic.causal import causal_lda_scan as torch_scan  # noqa: E402
from elastic_bench.elastic.imr import ProductKeyMemory  # noqa: E402
from elastic_bench.elastic.lda import LDALayer, pack, unpack  # noqa: E402

COLUMNS = [
    "created_at", "device_name", "torch", "triton", "cuda", "section", "name", "path", "dtype", "batch", "heads", "seq_len",
    "head_dim", "experts", "pass", "status", "max_rel_err", "tol", "n_samples", "latency_ms_p50", "latency_ms_p20",
    "latency_ms_p80", "speedup_vs_torch", "bytes", "floor_ms", "floor_frac", "copy_gbps", "peak_mem_mb", "act_mem_mb",
    "backend_detail", "note",
]
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
SCAN_DETAIL = {"triton": "triton:causal-scan(c=32)", "torch": "torch:chunked-scan(c=32)"}  # op rows call the paths directly
PN_DETAIL = {"triton": "triton:pack+unpack", "torch": "torch:sdpa"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEV = torch.device("cuda")
# shapes (B, h, N, d_h, k); --smoke-cpu swaps in tiny ones (Triton interpreter, fp32/fp16)
SHAPES = {
    "check_pn": [(8, 2, 8192, 32, 32), (4, 2, 1000, 64, 64)],
    "check_scan": [(4, 2, 2048, 32, 32), (2, 2, 777, 64, 64)],
    "extreme": (2, 2, 512, 32, 16),
    "pk": [(65536, 32, 1024), (1 << 20, 32, 128)],  # (M, k, users); brute force is users × M doubles
    "op": (8, 2, 8192, 32, 32),
    "pk_users": (8, 1024),
    "model": (8192, 8, 3706),  # N, B, items
}
SMOKE = {
    "check_pn": [(2, 2, 40, 16, 16)], "check_scan": [(2, 2, 40, 16, 16)], "extreme": (1, 2, 40, 16, 16), "pk": [(1024, 8, 4)],
    "op": (2, 2, 64, 16, 16), "pk_users": (2,), "model": (64, 2, 50),
}


class Run:
    def __init__(self, out_dir: Path, budget_s: float):
        import triton

        out_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.budget_s = budget_s
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.path = out_dir / f"gpu_check_kernels_{stamp}.csv"
        self.base = {
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device_name": torch.cuda.get_device_name(DEV) if DEV.type == "cuda" else "cpu (--smoke-cpu: Triton interpreter, not a measurement)",
            "torch": torch.__version__,
            "triton": triton.__version__,
            "cuda": torch.version.cuda or "",
        }
        self.fh = open(self.path, "w", newline="")
        self.w = csv.DictWriter(self.fh, fieldnames=COLUMNS)
        self.w.writeheader()
        self.copy_gbps = float("nan")
        self.ok: dict[tuple[str, str], bool] = {}  # (kernel, dtype) -> passed its check

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    def row(self, **kw) -> None:
        r = {**self.base, "copy_gbps": f"{self.copy_gbps:.1f}", **kw}
        for k, v in list(r.items()):
            if isinstance(v, float):
                r[k] = f"{v:.6g}"
            elif isinstance(v, torch.dtype):
                r[k] = str(v).replace("torch.", "")
        self.w.writerow({k: r.get(k, "") for k in COLUMNS})
        self.fh.flush()
        os.fsync(self.fh.fileno())
        print(" | ".join(f"{k}={r[k]}" for k in ("section", "name", "path", "dtype", "pass", "status", "max_rel_err", "latency_ms_p50", "speedup_vs_torch", "floor_frac", "peak_mem_mb") if r.get(k) not in (None, "")), flush=True)


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)


def do_bench(fn, rep_ms: int = 150) -> tuple[float, float, float, int]:
    if DEV.type != "cuda":
        return event_bench(fn, warmup=1, min_iters=1, max_iters=1)
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return p50, p20, p80, -1  # do_bench does not report its count


def event_bench(fn, warmup: int = 3, min_iters: int = 5, max_iters: int = 30, budget_s: float = 4.0) -> tuple[float, float, float, int]:
    """CUDA events around each call (long passes: do_bench would take one or two samples)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    t_end = time.time() + budget_s
    while len(times) < max_iters and (len(times) < min_iters or time.time() < t_end):
        if DEV.type != "cuda":  # --smoke-cpu
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(round(f * (len(times) - 1))))]  # noqa: E731
    return q(0.5), q(0.2), q(0.8), len(times)


def peak_memory(fn) -> tuple[float, float]:
    if DEV.type != "cuda":
        return float("nan"), float("nan")
    gc.collect()
    torch.cuda.empty_cache()
    sync()
    torch.cuda.reset_peak_memory_stats(DEV)
    base = torch.cuda.memory_allocated(DEV)
    fn()
    sync()
    peak = torch.cuda.max_memory_allocated(DEV)
    return peak / 2**20, (peak - base) / 2**20


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return (got.double() - ref.double()).abs().max().item() / max(ref.double().abs().max().item(), 1e-6)


def left_mask(b: int, n: int, g: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[0] = n
    mask = torch.arange(n)[None, :] >= (n - lengths)[:, None]
    mask[-1] = False
    return mask.to(DEV)


def randn(g, *shape, dtype, scale=1.0, grad=True):
    t = (torch.randn(*shape, generator=g) * scale).to(DEV, dtype)
    return t.requires_grad_(grad)


def heads_view(g, b, n, h, dh, dtype, scale=1.0, grad=True):
    """[B, h, N, d_h] as a view of [B, N, h, d_h], as the layer's projections make them."""
    t = (torch.randn(b, n, h, dh, generator=g) * scale).to(DEV, dtype).transpose(1, 2)
    return t.requires_grad_(grad) if grad else t


def compare(run: Run, name: str, dtype, shape, fn, ref_fn, inputs, weight, note: str = "", detail: str = "") -> bool:
    """Forward and every input gradient of ``fn`` against ``ref_fn`` (fp32 on the same inputs)."""
    b, h, n, dh, k = shape
    try:
        out = fn(*inputs)
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad((out.float() * weight).sum(), leaves)
        ref_in = [t.detach().float().requires_grad_() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
        ref = ref_fn(*ref_in)
        ref_leaves = [t for t in ref_in if isinstance(t, torch.Tensor) and t.requires_grad]
        ref_grads = torch.autograd.grad((ref * weight).sum(), ref_leaves)
        errs = [rel_err(out, ref)] + [rel_err(a, r) for a, r in zip(grads, ref_grads)]
        finite = bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(t).all()) for t in grads)
        err = max(errs)
        ok = finite and err <= TOL[dtype]
        errs_note = "errs(out,grads)=" + ",".join(f"{e:.2g}" for e in errs)
        run.row(section="check", name=name, path="triton", dtype=dtype, batch=b, heads=h, seq_len=n, head_dim=dh, experts=k,
                **{"pass": "fwd_bwd"}, status="ok" if ok else "incorrect", max_rel_err=err, tol=TOL[dtype], backend_detail=detail,
                note=f"{errs_note} {note}".strip())
        return ok
    except Exception as exc:  # noqa: BLE001 - a result, not a crash
        traceback.print_exc()
        run.row(section="check", name=name, path="triton", dtype=dtype, batch=b, heads=h, seq_len=n, head_dim=dh, experts=k,
                **{"pass": "fwd_bwd"}, status=f"error:{type(exc).__name__}", backend_detail=detail, note=str(exc)[:300])
        return False


# ------------------------------------------------------------------------------ sections


def section_env(run: Run) -> None:
    n = (1 << 30) if DEV.type == "cuda" else (1 << 20)  # bf16 elements: 2 GiB per buffer, several times the L2
    src = torch.empty(n, dtype=torch.bfloat16, device=DEV).fill_(1.0)
    dst = torch.empty_like(src)
    p50, p20, p80, _ = do_bench(lambda: dst.copy_(src), rep_ms=300)
    run.copy_gbps = 2 * src.numel() * src.element_size() / (p50 * 1e-3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    info = ""
    if DEV.type == "cuda":
        props = torch.cuda.get_device_properties(DEV)
        info = f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB, "
    run.row(section="env", name="d2d-copy", path="torch", status="ok", latency_ms_p50=p50, latency_ms_p20=p20, latency_ms_p80=p80,
            bytes=2 * n * 2, note=f"{info}host {platform.node()}; copy_gbps = (read+write)/p50")


def section_check(run: Run, dtypes) -> None:
    mods = {m: kernels.load(m) for m in ("pack", "unpack", "causal_scan", "product_keys")}
    for dname in dtypes:
        dtype = DTYPES[dname]
        g = torch.Generator().manual_seed(0)
        for shape in SHAPES["check_pn"] if dname == "bf16" else SHAPES["check_pn"][:1]:
            b, h, n, dh, k = shape
            mask = left_mask(b, n, g)
            q = randn(g, 1, h, k, dh, dtype=dtype)
            kk, v = heads_view(g, b, n, h, dh, dtype), heads_view(g, b, n, h, dh, dtype)
            w = torch.randn(b, h, k, dh, generator=g).to(DEV)
            ok = compare(run, "pack", dtype, shape, mods["pack"].pack_attention, pack, [q, kk, v, mask], w, detail="triton:pack")
            run.ok[("pack", dname)] = run.ok.get(("pack", dname), True) and ok
            q2 = heads_view(g, b, n, h, dh, dtype)
            k2, v2 = randn(g, b, h, k, dh, dtype=dtype), randn(g, b, h, k, dh, dtype=dtype)
            w = torch.randn(b, h, n, dh, generator=g).to(DEV)
            ok = compare(run, "unpack", dtype, shape, mods["unpack"].unpack_attention, unpack, [q2, k2, v2], w, detail="triton:unpack")
            run.ok[("unpack", dname)] = run.ok.get(("unpack", dname), True) and ok
        for shape in SHAPES["check_scan"] if dname == "bf16" else SHAPES["check_scan"][:1]:
            b, h, n, dh, k = shape
            s = dh**-0.5
            mask = left_mask(b, n, g)
            ins = [randn(g, 1, h, k, dh, dtype=dtype, scale=s), heads_view(g, b, n, h, dh, dtype), heads_view(g, b, n, h, dh, dtype), mask,
                   heads_view(g, b, n, h, dh, dtype, scale=s), randn(g, 1, h, k, dh, dtype=dtype), randn(g, 1, h, k, dh, dtype=dtype),
                   randn(g, h, h, dh, dh, dtype=dtype, scale=s), randn(g, h, h, dh, dh, dtype=dtype, scale=s)]
            w = torch.randn(b, h, n, dh, generator=g).to(DEV)
            ok = compare(run, "causal-scan", dtype, shape, lambda *a: mods["causal_scan"].causal_lda_scan(*a, chunk_size=32),
                         lambda *a: torch_scan(*a, chunk_size=32), ins, w, detail=SCAN_DETAIL["triton"])
            run.ok[("causal-scan", dname)] = run.ok.get(("causal-scan", dname), True) and ok
        # large score range: the per-position fallback (fp32 only; 16-bit scores this large are not meaningful)
        if dname == "fp32":
            b, h, n, dh, k = SHAPES["extreme"]
            mask = left_mask(b, n, g)
            ins = [randn(g, 1, h, k, dh, dtype=dtype, scale=60 * dh**-0.5), heads_view(g, b, n, h, dh, dtype), heads_view(g, b, n, h, dh, dtype), mask,
                   heads_view(g, b, n, h, dh, dtype, scale=dh**-0.5), randn(g, 1, h, k, dh, dtype=dtype), randn(g, 1, h, k, dh, dtype=dtype),
                   randn(g, h, h, dh, dh, dtype=dtype, scale=dh**-0.5), randn(g, h, h, dh, dh, dtype=dtype, scale=dh**-0.5)]
            w = torch.randn(b, h, n, dh, generator=g).to(DEV)
            ok = compare(run, "causal-scan-extreme", dtype, (b, h, n, dh, k), lambda *a: mods["causal_scan"].causal_lda_scan(*a, chunk_size=32),
                         lambda *a: torch_scan(*[t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in a], chunk_size=32),
                         ins, w, note="scores ~N(0, 60²): per-position fallback chunks; reference float64", detail=SCAN_DETAIL["triton"])
        # product keys
        for m, experts, users in SHAPES["pk"]:
            try:
                imr = ProductKeyMemory(64, experts, m).to(DEV)
                qv = torch.randn(users, 64, generator=g).to(DEV, dtype).requires_grad_()
                k1, k2 = imr.keys1.detach().to(dtype).requires_grad_(), imr.keys2.detach().to(dtype).requires_grad_()
                scores, idx = mods["product_keys"].product_key_retrieve(qv, k1, k2, imr.topk, experts)
                full = ((qv[:, :32].double() @ k1.double().t())[:, :, None] + (qv[:, 32:].double() @ k2.double().t())[:, None, :]).flatten(1)
                best, best_idx = full.topk(experts)
                err = rel_err(scores.detach(), best)
                agree = (idx == best_idx).float().mean().item()
                gq = torch.autograd.grad(scores.float().sum(), [qv])[0]
                ok = err <= TOL[dtype] and bool(torch.isfinite(gq).all()) and (agree > 0.99 or dtype != torch.float32)
                run.ok[("product-keys", dname)] = run.ok.get(("product-keys", dname), True) and ok
                run.row(section="check", name="product-keys", path="triton", dtype=dtype, batch=users, experts=experts, **{"pass": "fwd"},
                        status="ok" if ok else "incorrect", max_rel_err=err, tol=TOL[dtype], backend_detail="triton:product-keys",
                        note=f"M={m}; index agreement with brute force {agree:.4f}")
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                run.ok[("product-keys", dname)] = False
                run.row(section="check", name="product-keys", path="triton", dtype=dtype, **{"pass": "fwd"}, status=f"error:{type(exc).__name__}",
                        backend_detail="triton:product-keys", note=str(exc)[:300])


def traffic_bytes(b, h, n, dh, elt) -> int:
    """What the non-causal pack+unpack or the causal scan must move at least: read k1, v1, q2,
    write the output (each B·h·N·d_h elements), read the mask (B·N bytes); the k-sized
    dispatcher tensors are negligible and left out."""
    return 4 * b * h * n * dh * elt + b * n


def section_op(run: Run, dtypes) -> None:
    mods = {m: kernels.load(m) for m in ("pack", "unpack", "causal_scan", "product_keys")}
    b, h, n, dh, k = SHAPES["op"]
    for dname in dtypes:
        if run.left() < 20:
            run.row(section="op", name="*", dtype=DTYPES[dname], status="skipped:time-budget")
            return
        dtype = DTYPES[dname]
        g = torch.Generator().manual_seed(1)
        mask = left_mask(b, n, g)
        elt = torch.empty((), dtype=dtype).element_size()
        floor_ms = traffic_bytes(b, h, n, dh, elt) / (run.copy_gbps * 1e9) * 1e3
        shape = dict(batch=b, heads=h, seq_len=n, head_dim=dh, experts=k, dtype=dtype)
        # --- non-causal pack + unpack
        q1 = randn(g, 1, h, k, dh, dtype=dtype)
        k1, v1, q2 = (heads_view(g, b, n, h, dh, dtype) for _ in range(3))
        k2, v2 = randn(g, b, h, k, dh, dtype=dtype), randn(g, b, h, k, dh, dtype=dtype)
        dout = torch.randn(b, h, n, dh, generator=g).to(DEV, dtype)
        paths = {
            "triton": (lambda: mods["pack"].pack_attention(q1, k1, v1, mask), lambda: mods["unpack"].unpack_attention(q2, k2, v2)),
            "torch": (lambda: pack(q1, k1, v1, mask), lambda: unpack(q2, k2, v2)),
        }
        ok = run.ok.get(("pack", dname), False) and run.ok.get(("unpack", dname), False)
        times = {}
        for path, (fp, fu) in paths.items():
            if path == "triton" and not ok:
                run.row(section="op", name="pack+unpack", path=path, **shape, **{"pass": "fwd"}, status="incorrect", backend_detail=PN_DETAIL[path])
                continue

            def fwd(fp=fp, fu=fu):
                with torch.inference_mode():
                    fp()
                    fu()

            def fwd_bwd(fp=fp, fu=fu):
                p_out, u_out = fp(), fu()
                torch.autograd.grad([p_out, u_out], [q1, k1, v1, q2, k2, v2], [torch.ones_like(p_out), dout])

            for pname, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                p50, p20, p80, ns = do_bench(fn)
                times[(path, pname)] = p50
                extra = dict(bytes=traffic_bytes(b, h, n, dh, elt), floor_ms=floor_ms, floor_frac=floor_ms / p50) if pname == "fwd" else {}
                sp = times[("torch", pname)] / p50 if path == "triton" and ("torch", pname) in times else ""
                run.row(section="op", name="pack+unpack", path=path, **shape, **{"pass": pname}, status="ok", latency_ms_p50=p50,
                        latency_ms_p20=p20, latency_ms_p80=p80, speedup_vs_torch=sp, backend_detail=PN_DETAIL[path], **extra)
        # --- causal scan
        s = dh**-0.5
        ins = [randn(g, 1, h, k, dh, dtype=dtype, scale=s), k1, v1, mask, heads_view(g, b, n, h, dh, dtype, scale=s),
               randn(g, 1, h, k, dh, dtype=dtype), randn(g, 1, h, k, dh, dtype=dtype), randn(g, h, h, dh, dh, dtype=dtype, scale=s),
               randn(g, h, h, dh, dh, dtype=dtype, scale=s)]
        scan_paths = {"torch": lambda: torch_scan(*ins, chunk_size=32), "triton": lambda: mods["causal_scan"].causal_lda_scan(*ins, chunk_size=32)}
        times = {}
        for path in ("torch", "triton"):
            if path == "triton" and not run.ok.get(("causal-scan", dname), False):
                run.row(section="op", name="causal-scan", path=path, **shape, **{"pass": "fwd"}, status="incorrect", backend_detail=SCAN_DETAIL[path])
                continue
            f = scan_paths[path]

            def fwd(f=f):
                with torch.inference_mode():
                    f()

            def fwd_bwd(f=f):
                torch.autograd.grad(f(), [t for t in ins if t is not mask], dout)

            for pname, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                if run.left() < 10:
                    run.row(section="op", name="causal-scan", path=path, **shape, **{"pass": pname}, status="skipped:time-budget",
                            backend_detail=SCAN_DETAIL[path])
                    continue
                slow = path == "torch" or pname == "fwd_bwd"  # Python loops over chunks: event timer
                p50, p20, p80, ns = event_bench(fn, warmup=2, min_iters=3, max_iters=20, budget_s=2.0) if slow else do_bench(fn)
                times[(path, pname)] = p50
                extra = dict(bytes=traffic_bytes(b, h, n, dh, elt), floor_ms=floor_ms, floor_frac=floor_ms / p50) if pname == "fwd" else {}
                sp = times[("torch", pname)] / p50 if path == "triton" and ("torch", pname) in times else ""
                run.row(section="op", name="causal-scan", path=path, **shape, **{"pass": pname}, status="ok", n_samples=ns, latency_ms_p50=p50,
                        latency_ms_p20=p20, latency_ms_p80=p80, speedup_vs_torch=sp, backend_detail=SCAN_DETAIL[path], **extra)
        # --- product keys
        for users in SHAPES["pk_users"]:
            imr = ProductKeyMemory(64, 32, 65536).to(DEV, dtype)
            qv = torch.randn(users, 64, generator=g).to(DEV, dtype)
            times = {}
            for path in ("torch", "triton"):
                if path == "triton" and not run.ok.get(("product-keys", dname), False):
                    run.row(section="op", name="product-keys", path=path, dtype=dtype, batch=users, experts=32, **{"pass": "fwd"}, status="incorrect",
                            backend_detail="triton:product-keys")
                    continue
                os.environ[kernels.ENV_VAR] = "torch" if path == "torch" else "triton"

                def fwd():
                    with torch.inference_mode():
                        imr.retrieve(qv)

                p50, p20, p80, ns = do_bench(fwd)
                times[path] = p50
                run.row(section="op", name="product-keys", path=path, dtype=dtype, batch=users, experts=32, **{"pass": "fwd"}, status="ok",
                        latency_ms_p50=p50, latency_ms_p20=p20, latency_ms_p80=p80, backend_detail=imr.backend_detail,
                        speedup_vs_torch=times["torch"] / p50 if path == "triton" and "torch" in times else "", note="M=65536, t=k=32")
            os.environ.pop(kernels.ENV_VAR, None)
        # --- one LDA layer forward (projections included)
        for causal in (False, True):
            name = "lda-layer-causal" if causal else "lda-layer"
            kname = "causal-scan" if causal else "pack"
            layer = LDALayer(64, h, 0.0, causal, chunk_size=32).to(DEV, dtype).eval()
            x = torch.randn(b, n, 64, generator=g).to(DEV, dtype)
            p = torch.randn(1 if causal else b, k, 64, generator=g).to(DEV, dtype)
            lfloor = (2 * b * n * 64 * elt + b * n) / (run.copy_gbps * 1e9) * 1e3
            times = {}
            for path in ("torch", "triton"):
                if path == "triton" and not run.ok.get((kname, dname), False):
                    run.row(section="layer", name=name, path=path, **shape, **{"pass": "infer"}, status="incorrect", note=f"{kname} failed its check")
                    continue
                os.environ[kernels.ENV_VAR] = "torch" if path == "torch" else "triton"

                def fwd():
                    with torch.inference_mode():
                        layer(x, mask, p)

                p50, p20, p80, ns = event_bench(fwd, budget_s=1.5) if path == "torch" and causal else do_bench(fwd)
                times[path] = p50
                run.row(section="layer", name=name, path=path, **shape, **{"pass": "infer"}, status="ok", latency_ms_p50=p50,
                        latency_ms_p20=p20, latency_ms_p80=p80, backend_detail=layer.backend_detail, bytes=2 * b * n * 64 * elt + b * n,
                        floor_ms=lfloor, floor_frac=lfloor / p50, speedup_vs_torch=times["torch"] / p50 if path == "triton" and "torch" in times else "",
                        note="floor: read X, write the output")
            os.environ.pop(kernels.ENV_VAR, None)


def section_model(run: Run) -> None:
    from elastic_bench.losses import next_item_loss
    from elastic_bench.measure.passes import StepOptimizer
    from elastic_bench.recommender import ModelConfig, SeqRecModel

    n, b, n_items = SHAPES["model"]
    g = torch.Generator().manual_seed(2)
    items = torch.randint(1, n_items + 1, (b, n), generator=g).to(DEV)  # full length: sdpa-flash takes no padding mask
    t_all = torch.randint(1, n_items + 1, (b, n), generator=g).to(DEV)
    t_last = t_all[:, -1].contiguous()
    cells = []  # (backend, path, objective, pass, regime)
    for objective, elastic in (("last", "elastic"), ("all", "elastic-causal")):
        for backend, path in ((elastic, "triton"), (elastic, "torch"), ("sdpa-flash", "-"), ("softmax", "-")):
            cells += [(backend, path, objective, pname, "bf16") for pname in ("infer", "train_step")]
    # as the trainer trains: the path that actually runs with dropout on (the kernels have none)
    cells += [(elastic, "triton", objective, "train_step", "trainer") for objective, elastic in (("last", "elastic"), ("all", "elastic-causal"))]
    for backend, path, objective, pname, regime in cells:
        if regime == "bf16":
            dropout, wdtype, dname = 0.0, torch.bfloat16, torch.bfloat16
            how = "bf16 weights and AdamW state; dropout=0"
        else:
            dropout, wdtype, dname = 0.2, torch.float32, "fp32+bf16-autocast"
            how = "as the trainer: fp32 weights, bf16 autocast, dropout=0.2"
        if run.left() < 25:
            run.row(section="model", name=backend, path=path, dtype=dname, batch=b, heads=2, seq_len=n, head_dim=32, experts=32,
                    **{"pass": pname}, status="skipped:time-budget", note=f"objective={objective}; {how}")
            continue
        if path != "-":  # what a user gets by default on a GPU (the interpreter needs it forced)
            os.environ[kernels.ENV_VAR] = ("auto" if DEV.type == "cuda" else "triton") if path == "triton" else "torch"
        model = opt = None
        try:
            options = {"experts": 32} if backend.startswith("elastic") else {}
            cfg = ModelConfig.make(backend, n_items, n, options=options, d_model=64, heads=2, layers=2, dropout=dropout,
                                   causal=(objective == "all"))
            model = SeqRecModel(cfg).to(DEV, wdtype)
            targets = t_all if objective == "all" else t_last
            if pname == "infer":
                model.eval()

                def fn():
                    with torch.inference_mode():
                        model.user_repr(items)
            else:
                model.train()
                opt = StepOptimizer(model)  # the train_step pass's, of the trainer's kind: AdamW fused where torch has the kernel

                def fn():
                    opt.zero_grad(set_to_none=True)
                    # the trainer's regime: bf16 autocast on the GPU (the CPU smoke run stays in fp32)
                    amp = DEV.type == "cuda" and regime == "trainer"
                    with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=amp):
                        loss = next_item_loss(model, items, targets, objective, "full")
                    loss.backward()
                    opt.step()

            p50, p20, p80, ns = event_bench(fn, warmup=2, min_iters=3, max_iters=20, budget_s=3.0)
            peak, act = peak_memory(fn)
            extra = f"; optimizer {opt.implementation}" if opt is not None else ""
            if backend.startswith("elastic"):
                lda = model.encoder.blocks[0].attn
                src = getattr(model.encoder, "source", None)
                extra += f"; imr={getattr(src, 'backend_detail', 'static')}" + (f"; kernels did not run: {lda.kernel_reason}" if lda.kernel_reason and path == "triton" else "")
            run.row(section="model", name=backend, path=path, dtype=dname, batch=b, heads=2, seq_len=n, head_dim=32, experts=32,
                    **{"pass": pname}, status="ok", n_samples=ns, latency_ms_p50=p50, latency_ms_p20=p20, latency_ms_p80=p80,
                    peak_mem_mb=peak, act_mem_mb=act, backend_detail=model.backend_detail,
                    note=f"objective={objective}; loss=full; n_items={n_items}; layers=2; d=64; {how}; full-length sequences{extra}")
        except torch.cuda.OutOfMemoryError:
            run.row(section="model", name=backend, path=path, dtype=dname, batch=b, seq_len=n, **{"pass": pname}, status="oom",
                    note=f"objective={objective}; {how}")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            run.row(section="model", name=backend, path=path, dtype=dname, batch=b, seq_len=n, **{"pass": pname},
                    status=f"error:{type(exc).__name__}", note=f"objective={objective}; {how}; {str(exc)[:250]}")
        finally:
            os.environ.pop(kernels.ENV_VAR, None)
            del model, opt
            gc.collect()
            torch.cuda.empty_cache()


PREFLIGHT_EXIT = 3  # Triton cannot build its launcher or run a kernel here


def sections_in_order(run: Run, dtypes) -> list:
    """By importance: the headline targets (model) before the op rows, so the time budget cuts the least important."""
    return [("env", lambda: section_env(run)), ("check", lambda: section_check(run, dtypes)),
            ("model", lambda: section_model(run)), ("op", lambda: section_op(run, dtypes))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "results"), help="folder for the CSV ($OUT, else ./results)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="stop starting new work after this many seconds")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32")
    ap.add_argument("--sections", default="env,check,model,op", help="which sections run (always in the order env, check, model, op)")
    ap.add_argument("--smoke-cpu", action="store_true", help="tiny shapes on the CPU under the Triton interpreter: exercises this script, measures nothing")
    args = ap.parse_args(argv)
    global DEV
    if args.smoke_cpu:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--smoke-cpu needs TRITON_INTERPRET=1 in the environment (set before triton is imported)", file=sys.stderr)
            return 2
        DEV = torch.device("cpu")
        SHAPES.update(SMOKE)
    elif not torch.cuda.is_available():
        print("no CUDA device: this script checks and times the kernels on a GPU (--smoke-cpu to exercise it here)", file=sys.stderr)
        return 2
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    ok, info = kernels.triton_status()
    if not ok:
        print(info, file=sys.stderr)
        return 2
    why = kernels.load("preflight").preflight(DEV)  # before anything is timed or written
    if why:
        print(f"preflight failed: {why}", file=sys.stderr)
        return PREFLIGHT_EXIT
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references in fp32
    run = Run(Path(args.out), args.budget_s)
    print(f"writing {run.path}", flush=True)
    dtypes = [d for d in args.dtypes.split(",") if d]
    sections = args.sections.split(",")
    for name, fn in sections_in_order(run, dtypes):
        if name not in sections:
            continue
        t = time.time()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - record and go on to the next section
            traceback.print_exc()
            run.row(section=name, name="*", status=f"error:{type(exc).__name__}", note=str(exc)[:300])
        print(f"== section {name}: {time.time() - t:.1f}s (elapsed {time.time() - run.t0:.1f}s)", flush=True)
    run.fh.close()
    print(f"wrote {run.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
