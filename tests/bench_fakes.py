"""Tiny fake attention backends for the benchmark-harness tests (registered per test).

- ``fake-exact``   exact softmax attention; passes the correctness gate
- ``fake-wrong``   the same, output scaled by 1.1: fails the gate (``incorrect``)
- ``fake-oom``     raises ``torch.OutOfMemoryError`` when N >= ``FakeOOM.oom_len``
- ``fake-kbd``     raises ``KeyboardInterrupt`` at N == ``FakeInterrupt.at_len`` while armed
- ``fake-experts`` declares options ``experts`` and ``memory_size`` (ignored), non-causal
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

from elastic_bench import registry
from elastic_bench.attention import Backend, Capabilities, QKVAttention, masked_softmax_reference


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, causal: bool) -> Tensor:
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = mask[:, None, None, :].expand(-1, 1, n, n)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    allowed = allowed | torch.eye(n, dtype=torch.bool, device=q.device)
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v


class ExactAttention(QKVAttention):
    scale = 1.0

    def __init__(self, d_model, heads, dropout=0.0, causal=False, **options):
        super().__init__(d_model, heads, dropout, causal)
        self.options = options

    def attend(self, q, k, v, mask):
        self.backend_detail = "fake"
        return dense_attention(q, k, v, mask, self.causal) * self.scale

    def attend_reference(self, q, k, v, mask):
        return masked_softmax_reference(q, k, v, mask, self.causal)


class WrongAttention(ExactAttention):
    scale = 1.1


class OOMAttention(ExactAttention):
    def attend(self, q, k, v, mask):
        if q.shape[-2] >= FakeOOM.oom_len:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB (fake)")
        return super().attend(q, k, v, mask)


class InterruptAttention(ExactAttention):
    def attend(self, q, k, v, mask):
        if FakeInterrupt.armed and q.shape[-2] == FakeInterrupt.at_len:
            raise KeyboardInterrupt
        return super().attend(q, k, v, mask)


class FakeExact(Backend):
    name = "fake-exact"
    summary = "exact softmax (test)"
    capabilities = Capabilities()
    module = ExactAttention


class FakeWrong(Backend):
    name = "fake-wrong"
    summary = "wrong on purpose (test)"
    capabilities = Capabilities()
    module = WrongAttention


class FakeOOM(Backend):
    name = "fake-oom"
    summary = "runs out of memory at long sequences (test)"
    capabilities = Capabilities()
    module = OOMAttention
    oom_len = 32


class FakeInterrupt(Backend):
    name = "fake-kbd"
    summary = "Ctrl-C in the middle of a sweep (test)"
    capabilities = Capabilities()
    module = InterruptAttention
    armed = True
    at_len = 32


class FakeExperts(Backend):
    name = "fake-experts"
    summary = "declares ELASTIC-like options (test)"
    capabilities = Capabilities(causal=False, options={"experts": 4, "memory_size": 0})
    module = ExactAttention


ALL = (FakeExact, FakeWrong, FakeOOM, FakeInterrupt, FakeExperts)


@contextlib.contextmanager
def registered(*classes: type[Backend]):
    """Register ``classes`` (default: all fakes) for the duration of the block."""
    classes = classes or ALL
    for cls in classes:
        registry.register(cls, replace=True)
    try:
        yield
    finally:
        for cls in classes:
            registry.unregister(cls.name)
