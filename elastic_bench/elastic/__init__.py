"""ELASTIC: Linear Dispatcher Attention + Interest Memory Retrieval (ELASTIC_SPEC.md).

- :mod:`.lda`     the LDA layer (pack / unpack, multi-head, both variants)
- :mod:`.causal`  the chunked causal scan of ``elastic-causal``
- :mod:`.imr`     interest memory retrieval with product keys
- :mod:`.naive`   naive references (the oracles of the fast paths)
- :mod:`.model`   ElasticAttention (op level) and ElasticEncoder (model level)
- :mod:`.backend` the registered ``elastic`` / ``elastic-causal`` backends
"""
