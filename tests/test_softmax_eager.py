"""The eager "standard attention" baseline is lean: no float [B, 1, N, N] bias per call."""

from __future__ import annotations

import torch

from baselines.softmax import SoftmaxBackend, blocked_pairs
from elastic_bench.measure.memory import measure_memory


def test_blocked_pairs_is_boolean_and_matches_the_rules():
    mask = torch.tensor([[False, True, True, True]])
    blocked = blocked_pairs(mask, 4, causal=True)
    assert blocked.dtype == torch.bool
    allowed = ~blocked[0, 0]
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)  # padding query 0 reads itself only; causal otherwise


def test_eager_infer_holds_at_most_two_score_matrices():
    """Scores (computed, then masked in place) and their softmax: 2 × B·H·N² floats.  A float
    bias plus an out-of-place add needed 2.7 of them (10.75 MB at this shape; now 9.25 MB)."""
    b, h, n, d = 2, 2, 512, 64
    attn = SoftmaxBackend.build(d_model=d, heads=h, causal=True).eval()
    x, mask = torch.randn(b, n, d), torch.ones(b, n, dtype=torch.bool)
    mask[1, : n // 3] = False

    def run():
        with torch.inference_mode():
            attn(x, mask)

    act = measure_memory(run, torch.device("cpu")).act_mb
    scores_mb = b * h * n * n * 4 / 2**20
    assert act < 2.4 * scores_mb, f"{act:.1f} MB live for {scores_mb:.1f} MB of scores"
