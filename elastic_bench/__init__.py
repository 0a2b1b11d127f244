"""elastic-bench: ELASTIC (linear dispatcher attention + interest memory retrieval) and the
baselines it claims to beat, inside one sequential recommender, with the benchmark suite
that settles the claims.

- :mod:`elastic_bench.attention`  the attention interface every backend implements
- :mod:`elastic_bench.registry`   backends found through the ``elastic_bench.backends`` entry points
- :mod:`elastic_bench.elastic`    ELASTIC: LDA layers, causal scan, interest memory retrieval
- :mod:`elastic_bench.recommender` the recommender shell shared by every backend
"""

__version__ = "0.1.0"
