"""Analytic forward FLOPs of ELASTIC's paths (matmul-class, 2 per multiply-add, as
``torch.utils.flop_counter`` counts), per call, for B sequences of N positions, model
width d = h·d_h and k dispatchers.  Each path is named by its ``backend_detail``:

- ``torch:sdpa`` / ``triton:pack+unpack`` (non-causal LDA, :func:`lda_flops`)::

      pack  = 4·B·k·N·d       (k queries over N keys: QKᵀ and PV)
      unpack = 4·B·N·k·d      (N queries over k keys)

  the Triton kernels compute exactly this (padding keys are masked, not skipped).
- ``torch:chunked-scan(c=C)``: the PyTorch causal scan is plain PyTorch, counted by the
  FLOP counter as it runs; it has no analytic count here (its algebra is its own and
  differs from the kernel's).
- ``triton:causal-scan(c=C)`` (:func:`causal_scan_triton_flops`): the tile products of
  ``_scan_fwd``, per program (b, output head g) and chunk of m positions::

      4·m·k·d_h + h·2·m·(5·k·d_h + 2·d_h² + 2·m·d_h + 2·m·k)

  plus the segment summaries (the non-causal pack's split kernel, 4·B·h·k·N·d_h) whenever
  the sequence spans more than one chunk: on a GPU they run whenever the B·h programs
  leave streaming multiprocessors idle (the benchmark's usual case), so the count is ≈.
  Tiles padded to powers of two are counted at their logical size.  Its backward is
  PyTorch (recomputation per chunk), seen by the counter.
- ``torch:topk`` / ``triton:product-keys`` (IMR, :func:`product_key_flops`): the sub-key
  scores, 2·B·n·d_q (n = √M sub-keys per half, d_q the query width); the top-k searches
  are comparisons, and the Triton path's differentiable re-scoring is element-wise.

Example::

    >>> lda_flops(batch=2, seq_len=256, d_model=64, experts=32)
    8388608
"""

from __future__ import annotations

import math
import re


def lda_flops(batch: int, seq_len: int, d_model: int, experts: int) -> int:
    """Non-causal LDA token mixing: pack + unpack, 8·B·N·k·d."""
    return 8 * batch * seq_len * experts * d_model


def _chunks(seq_len: int, chunk: int) -> list[int]:
    return [min(chunk, seq_len - a) for a in range(0, seq_len, chunk)]


def causal_scan_triton_flops(batch: int, seq_len: int, d_model: int, heads: int, experts: int, chunk: int) -> int:
    """The Triton causal scan's forward (module docstring)."""
    k, h, dh = experts, heads, d_model // heads
    per_program = sum(4 * m * k * dh + h * 2 * m * (5 * k * dh + 2 * dh * dh + 2 * m * dh + 2 * m * k) for m in _chunks(seq_len, chunk))
    summaries = 4 * batch * h * k * seq_len * dh if seq_len > chunk else 0
    return batch * h * per_program + summaries


def product_key_flops(batch: int, memory_size: int, key_dim: int) -> int:
    """IMR's sub-key scores: two halves of d_q/2 against n = √M sub-keys each, 2·B·n·d_q."""
    return 2 * batch * math.isqrt(memory_size) * key_dim


def path_flops(detail: str, *, batch: int, seq_len: int, d_model: int, heads: int, options: dict) -> int | None:
    """Forward FLOPs of the ELASTIC path named ``detail`` (None for a path not listed above)."""
    experts = int(options.get("experts", 32))
    if detail in ("torch:sdpa", "triton:pack+unpack"):
        return lda_flops(batch, seq_len, d_model, experts)
    if detail in ("torch:topk", "triton:product-keys"):
        return product_key_flops(batch, int(options.get("memory_size", 0)), d_model)
    m = re.fullmatch(r"triton:causal-scan\(c=(\d+)\)", detail)
    if m:
        return causal_scan_triton_flops(batch, seq_len, d_model, heads, experts, int(m.group(1)))
    return None


def blind_phases(detail: str) -> tuple[str, ...]:
    """Phases of an ELASTIC path that run in Triton (unseen by the FLOP counter): both for the
    pack/unpack kernels; the forward only for the causal scan (PyTorch backward) and for the
    product-key top-k (forward only; gradients flow through PyTorch re-scoring)."""
    if detail == "triton:pack+unpack":
        return ("fwd", "bwd")
    if detail.startswith(("triton:causal-scan", "triton:product-keys")):
        return ("fwd",)
    return ("fwd", "bwd") if detail.startswith("triton:") else ()
