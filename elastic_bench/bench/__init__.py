"""The efficiency benchmark: grammar, grid, timer, memory meter, passes, gate, store, plots.

One small file per idea; none of them imports a specific model (backends come from
:mod:`elastic_bench.registry` by name):

- :mod:`.grammar`  ``256..8192:x4``-style axes, memory sizes, name lists
- :mod:`.spec`     the frozen sweep configuration (CLI + YAML + device defaults)
- :mod:`.cells`    the grid of cells and their ``config_hash``
- :mod:`.timer`    warm-up, then median/p20/p80 (CUDA events or ``perf_counter_ns``)
- :mod:`.memory`   peak/activation memory (CUDA allocator or CPU profiler events)
- :mod:`.passes`   ``infer`` / ``fwd`` / ``fwd_bwd`` / ``train_step`` at model or op level
- :mod:`.gate`     the correctness gate against each backend's naive reference
- :mod:`.flops`    analytic or counted FLOPs per pass
- :mod:`.store`    the results CSV schema, fsync'ed appends, resumption
- :mod:`.sweep`    the engine
- :mod:`.compare`  speed-ups and memory reductions vs a baseline
- :mod:`.plots`, :mod:`.report`  figures and the Markdown report
"""
