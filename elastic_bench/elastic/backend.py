"""The ``elastic`` and ``elastic-causal`` backends (registered through the entry-point group)."""

from __future__ import annotations

from typing import Any

from ..attention import Backend, Capabilities
from . import flops
from .model import ElasticAttention, ElasticEncoder

# options shared by both variants; the defaults are ELASTIC_SPEC.md §3's
_COMMON = {"experts": 32, "chunk_size": 32}


class _ElasticPaths(Backend):
    """What both ELASTIC backends share: FLOPs of the path that ran (:mod:`.flops`)."""

    @classmethod
    def counter_blind(cls, detail: str) -> tuple[str, ...]:
        return flops.blind_phases(detail)

    @classmethod
    def attention_flops(cls, *, batch, seq_len, d_model, heads, causal, options=None, detail="", lengths=None) -> int | None:
        """ELASTIC's paths: :func:`elastic_bench.elastic.flops.path_flops` (mask lengths do not matter)."""
        return flops.path_flops(detail, batch=batch, seq_len=seq_len, d_model=d_model, heads=heads, options={**cls.capabilities.options, **(options or {})})


class ElasticBackend(_ElasticPaths):
    name = "elastic"
    summary = "ELASTIC: linear dispatcher attention (pack/unpack over k experts) + product-key interest memory, non-causal"
    capabilities = Capabilities(
        causal=False,
        options={**_COMMON, "memory_size": 65536, "topk": None, "query_pool": "mean", "sparse_grad": False},
    )
    module = ElasticAttention

    @classmethod
    def build_encoder(cls, **kwargs: Any) -> ElasticEncoder:
        return ElasticEncoder(**kwargs)


class ElasticCausalBackend(_ElasticPaths):
    name = "elastic-causal"
    summary = "ELASTIC with a causal pack step (chunked cumulative softmax), static first-layer dispatchers"
    capabilities = Capabilities(non_causal=False, options=dict(_COMMON))
    module = ElasticAttention

    @classmethod
    def build_encoder(cls, **kwargs: Any) -> ElasticEncoder:
        return ElasticEncoder(memory_size=0, **kwargs)
