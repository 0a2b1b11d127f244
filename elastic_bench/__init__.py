"""elastic-bench: ELASTIC (linear dispatcher attention + interest memory retrieval) and the
baselines it claims to beat, inside one sequential recommender, with the benchmark suite
that settles the claims.

- :mod:`elastic_bench.attention`  the attention interface every backend implements
- :mod:`elastic_bench.registry`   backends found through the ``elastic_bench.backends`` entry points
- :mod:`elastic_bench.elastic`    ELASTIC: LDA layers, causal scan, interest memory retrieval
- :mod:`elastic_bench.recommender` the recommender shell shared by every backend
- :mod:`elastic_bench.train`      training and full-ranking evaluation of one model
- :mod:`elastic_bench.measure`    how one cell is measured (time, memory, FLOPs, the correctness gate)
- :mod:`elastic_bench.runs`       which cells run, where, and how they resume (sweeps, grids, presets, launchers)
- :mod:`elastic_bench.report`     how rows become figures and tables (and the verdict)

The layers (``[tool.importlinter]`` in pyproject.toml): cli > runs > report > measure > models >
foundations; see README "A short tour".
"""

__version__ = "0.1.0"
