"""Measuring one cell: how long it takes, how much memory it holds, how many FLOPs it does,
and whether it computes the right thing.  Nothing here imports reporting; models come
from the registry by name.

- :mod:`.cell`           one measurement (:class:`~.cell.Cell`) and its ``config_hash``
- :mod:`.engine`         gate, time and meter a cell; its results row (every failure a status)
- :mod:`.timer`          warm-up by calls and time, then samples (CUDA events or ``perf_counter_ns``)
- :mod:`.memory`         peak/activation memory (CUDA allocator or CPU profiler events)
- :mod:`.passes`         ``infer`` / ``fwd`` / ``fwd_bwd`` / ``train_step`` / ``serve`` / ``serve_step``
- :mod:`.gate`           the correctness gate of the timed path against the backend's naive reference
- :mod:`.flops`          counted or analytic FLOPs per pass
- :mod:`.workload_mask`  the padding mask a workload times
- :mod:`.samples`        a row's latency columns from its samples; pooling process repeats
- :mod:`.bootstrap`      cluster-bootstrap intervals of medians and ratios (paired for rows timed together)
"""
