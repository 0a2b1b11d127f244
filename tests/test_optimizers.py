"""The fused AdamW against torch's default implementation, what runs is named, and a checkpoint
written by one implementation resumes in the other."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from elastic_bench.data.synthetic import synthetic
from elastic_bench import registry
from elastic_bench.measure.engine import Engine
from elastic_bench.measure.passes import build_workload
from elastic_bench.optimizers import adamw, align_loaded_state, build_optimizers, epochs_implementation, implementation
from elastic_bench.runs.grid import expand
from elastic_bench.runs.spec import load_spec
from elastic_bench.train.config import TrainConfig
from elastic_bench.train.rows import accuracy_row
from elastic_bench.train.trainer import train


def _params(seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in ((300, 17), (17,), (5, 3, 2))]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adamw_takes_the_default_implementations_steps(weight_decay):
    """Twenty steps on fresh random gradients: the same parameters and moments, to rounding."""
    fused_p, ref_p = _params(1), _params(1)
    fused = adamw(fused_p, lr=1e-2, betas=(0.9, 0.98), weight_decay=weight_decay)
    ref = torch.optim.AdamW(ref_p, lr=1e-2, betas=(0.9, 0.98), weight_decay=weight_decay, foreach=False)
    assert implementation([fused]) == "AdamW fused" and implementation([ref]) == "AdamW for-loop"
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        for a, b in zip(fused_p, ref_p):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        ref.step()
    for a, b in zip(fused_p, ref_p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"], rtol=1e-5, atol=1e-8)
    assert not torch.equal(fused_p[0], _params(1)[0])  # the steps moved the parameters


def test_adamw_falls_back_where_torch_has_no_fused_kernel():
    # torch >= 2.5 builds AdamW(fused=True) for a complex parameter and fails only at its first step
    z = [nn.Parameter(torch.randn(4, dtype=torch.complex64))]
    opt = adamw(z, lr=1e-3)
    assert not opt.param_groups[0]["fused"] and implementation([opt]) == "AdamW for-loop"
    z[0].grad = torch.ones_like(z[0])
    opt.step()  # steps, where a fused optimiser would raise
    # and where the fused kernel refuses an option at construction
    assert implementation([adamw(_params(0), lr=1e-3, differentiable=True)]) == "AdamW for-loop"


def test_a_sparse_bank_gets_sparse_adam_beside_the_fused_adamw():
    model = nn.Sequential(nn.Embedding(50, 4, sparse=True), nn.Linear(4, 4))
    opts = build_optimizers(model, lr=1e-3)
    assert implementation(opts) == "AdamW fused + SparseAdam"
    assert [len(o.param_groups[0]["params"]) for o in opts] == [2, 1]  # the linear's weight and bias; the table


def test_align_loaded_state_keeps_the_implementation_that_was_built():
    p = _params(3)
    ref = torch.optim.AdamW(p, lr=1e-3, foreach=False)
    for x in p:
        x.grad = torch.ones_like(x)
    ref.step()
    fused = adamw(p, lr=1e-3)
    fused.load_state_dict(align_loaded_state(fused, ref.state_dict()))
    assert implementation([fused]) == "AdamW fused" and float(fused.state[p[0]]["step"]) == 1.0
    # what align_loaded_state is there for: a plain load brings the saved implementation back
    fused_plain = adamw(p, lr=1e-3)
    fused_plain.load_state_dict(ref.state_dict())
    assert implementation([fused_plain]) == "AdamW for-loop"


def test_epochs_implementation_names_runs_of_epochs():
    assert epochs_implementation([{"epoch": 1, "optimizer": "AdamW fused"}, {"epoch": 2, "optimizer": "AdamW fused"}]) == "AdamW fused"
    mixed = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "optimizer": "AdamW fused"}]
    assert epochs_implementation(mixed) == "not recorded (epochs 1-2); AdamW fused (epoch 3)"
    assert epochs_implementation([]) == ""


def test_a_run_resumed_from_a_for_loop_checkpoint_trains_on_fused_and_says_so(tmp_path, monkeypatch):
    ds = synthetic(n_users=60, n_items=40, lengths="fixed:10", seed=2)
    cfg = TrainConfig(model="softmax", max_len=10, d_model=16, heads=2, layers=1, dropout=0.1, epochs=3, batch_size=16, patience=0)
    full = train(cfg, ds)
    assert [h["optimizer"] for h in full.history] == ["AdamW fused"] * 3
    ckpt = tmp_path / "run.pt"
    import elastic_bench.optimizers as optimizers

    with monkeypatch.context() as m:  # the first two epochs as a build without the fused kernel ran them
        m.setattr(optimizers, "adamw", lambda params, **kw: torch.optim.AdamW(list(params), foreach=False, **kw))
        train(dataclasses.replace(cfg, epochs=2), ds, checkpoint=ckpt)
    resumed = train(cfg, ds, checkpoint=ckpt)
    assert resumed.summary()["optimizer"] == "AdamW for-loop (epochs 1-2); AdamW fused (epoch 3)"
    assert "optimizer=AdamW for-loop (epochs 1-2); AdamW fused (epoch 3)" in accuracy_row(resumed, "r")["reason"]
    # the same update either way: the resumed run ends where the fused one did, to rounding
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-4)


@pytest.mark.parametrize("level", ["model", "op"])
def test_a_train_step_row_names_its_optimizer_after_the_path(level):
    spec = load_spec({"models": "elastic", "level": level, "seq_len": "16", "batch": "2", "n_items": "50", "pass": "train_step",
                      "option": ["experts=4", "memory_size=64", "sparse_grad=true"], "repeats": "2", "min_time": "0", "warmup": "1"})  # fmt: skip
    cell = expand(spec)[0]
    row = Engine(spec).measure(cell, registry.get("elastic"))
    assert row["status"] == "ok" and row["backend_detail"].endswith("; optimizer AdamW fused + SparseAdam"), row
    assert row["backend_detail"].split("; optimizer")[0] == build_workload(cell, torch.device("cpu")).backend_detail  # the gated path
    infer = Engine(spec).measure(dataclasses.replace(cell, pass_="infer"), registry.get("elastic"))
    assert infer["status"] == "ok" and "optimizer" not in infer["backend_detail"]
