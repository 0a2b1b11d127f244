#!/usr/bin/env bash
# The reference GPU efficiency sweep: every registered backend, N = 256..8192, bf16, `infer` and
# `train_step` (objectives all + last for causal models, last for the others), 64k tokens per
# batch, model level.  Sized to finish in about 5 minutes on one H100 (~210 cells at ~1 s each).
#
#   scripts/gpu_sweep.sh                 # writes results/gpu/… (or $OUT/… when OUT is set)
#   scripts/gpu_sweep.sh --seq-len 1k    # extra arguments go to `elastic-bench sweep`
#   DEVICE=cpu scripts/gpu_sweep.sh --seq-len 64 --dry-run   # smoke test without a GPU
#
# Before the sweep, a preflight checks that Triton can build its launcher and run a kernel.
# Writes: card.txt (GPU, driver, torch, git commit, date), doctor.txt (which backends can run and
# why not), gpu-sweep.csv (one row per cell; rerunning resumes), gpu-serving.csv (serve and
# serve_step at B = 1; SKIP_SERVING=1 skips it), report/ (report.md + figures).
set -euo pipefail
cd "$(dirname "$0")/.."

OUTDIR="${OUT:-results/gpu}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUTDIR"

if ! command -v elastic-bench >/dev/null 2>&1; then
    # backends are found through entry points, so the package must be installed (no network needed)
    python -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname)"
    echo "git: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || echo "nvidia-smi: not available"
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")'
} > "$OUTDIR/card.txt"
cat "$OUTDIR/card.txt"
elastic-bench doctor > "$OUTDIR/doctor.txt" 2>&1 || true

# Fail fast (exit 3, one line) when Triton cannot build its C launcher (no C compiler or no
# Python.h) or run a kernel: on CUDA the ELASTIC kernels would otherwise fail cell by cell.
if [ "$DEVICE" != "cpu" ] && python -c 'import triton' >/dev/null 2>&1; then
    python -m elastic_bench.elastic.kernels.preflight --device "$DEVICE"
fi

CSV="$OUTDIR/gpu-sweep.csv"
start=$(date +%s)
elastic-bench sweep \
    --device "$DEVICE" \
    --models all \
    --seq-len 256..8192 \
    --dtype bf16 \
    --pass infer,train_step \
    --tokens-per-batch 64k \
    --repeats 30 --min-time 0.25 --warmup 2 \
    --out "$CSV" \
    --no-plot \
    "$@"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/card.txt"

# The serving regime (README "Serving"; the verdict's serving rows): one user, the whole history
# (serve) or one appended interaction (serve_step, with its state bytes), about 40 cells.
if [ -z "${SKIP_SERVING:-}" ]; then
    start=$(date +%s)
    elastic-bench sweep \
        --device "$DEVICE" \
        --models softmax,sdpa,sdpa-flash,flash-attn,linear,elastic,elastic-causal \
        --seq-len 200,800,8192 \
        --dtype bf16 \
        --pass serve,serve_step \
        --batch 1 \
        --repeats 30 --min-time 0.25 --warmup 2 \
        --out "$OUTDIR/gpu-serving.csv" \
        --no-plot \
        "$@"
    echo "serving sweep wall time: $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/card.txt"
fi

if [ -s "$CSV" ]; then
    elastic-bench report "$CSV" --out "$OUTDIR/report"
fi
