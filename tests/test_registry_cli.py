"""The registry (entry points, plugins, errors), packaging without extras, doctor and list."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cli
from elastic_bench import registry
from elastic_bench.attention import Backend, Capabilities
from elastic_bench.recommender import ModelConfig, SeqRecModel

BUILTIN = {
    "elastic", "elastic-causal", "softmax", "sdpa", "sdpa-flash", "sdpa-mem-efficient", "sdpa-math",
    "flash-attn", "xformers", "linformer", "linear", "linrec", "lightsans",
}  # fmt: skip


def test_every_builtin_backend_is_registered_through_entry_points():
    assert BUILTIN <= set(registry.names())
    assert registry.load_errors() == {}


def test_unknown_backend_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'softmax'"):
        registry.get("sofmax")


def test_unknown_option_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="no option bogus.*experts"):
        registry.build("elastic", 16, 2, bogus=1)


def test_causal_support_is_enforced():
    with pytest.raises(ValueError, match="no causal variant"):
        registry.build("elastic", 16, 2, causal=True)
    with pytest.raises(ValueError, match="causal only"):
        registry.build("elastic-causal", 16, 2, causal=False)
    assert not registry.get("elastic").capabilities.causal


def test_unavailable_reasons():
    assert registry.get("flash-attn").unavailable_reason("cpu") is not None
    assert registry.get("softmax").unavailable_reason("cpu", torch.float32) is None

    class Narrow(Backend):
        name = "narrow"
        capabilities = Capabilities(devices=("cuda",), dtypes=(torch.float16,), head_dims=(64,), requires=("no_such_pkg_xyz",))

    assert "no_such_pkg_xyz" in Narrow.unavailable_reason()
    Narrow.capabilities = Capabilities(devices=("cuda",), dtypes=(torch.float16,), head_dims=(64,))
    assert "needs cuda" in Narrow.unavailable_reason("cpu")
    Narrow.capabilities = Capabilities(dtypes=(torch.float16,), head_dims=(64,))
    assert "dtype fp32" in Narrow.unavailable_reason("cpu", torch.float32)
    assert "head dim 32" in Narrow.unavailable_reason("cpu", torch.float16, head_dim=32)


def test_a_third_party_package_registers_a_backend_through_entry_points(tmp_path: Path):
    """A plugin installed as a distribution (dist-info with entry_points.txt) is found and built."""
    (tmp_path / "my_plugin.py").write_text(
        textwrap.dedent(
            """
            from elastic_bench.attention import Backend, Capabilities, QKVAttention, masked_softmax_reference
            class Mine(QKVAttention):
                def __init__(self, d_model, heads, dropout=0.0, causal=False, window=8):
                    super().__init__(d_model, heads, dropout, causal)
                    self.window = window
                def attend(self, q, k, v, mask):
                    return masked_softmax_reference(q, k, v, mask, self.causal)
                attend_reference = attend
            class MyBackend(Backend):
                name = "mine"
                summary = "a plugin"
                capabilities = Capabilities(options={"window": 8})
                module = Mine
            """
        )
    )
    dist = tmp_path / "my_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[elastic_bench.backends]\nmine = my_plugin:MyBackend\nbroken = my_plugin:Nope\n")
    code = textwrap.dedent(
        """
        import torch
        from elastic_bench import registry
        m = registry.build("mine", 16, 2, window=4)
        assert m.window == 4
        y = m(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
        assert y.shape == (2, 5, 16)
        assert "mine" in registry.names()
        assert "broken" in registry.load_errors()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(tmp_path), "PATH": ""}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_imports_without_optional_extras():
    """`import elastic_bench, baselines` and every backend module import with flash-attn/xformers absent."""
    code = (
        "import sys; sys.modules['flash_attn'] = None; sys.modules['xformers'] = None\n"
        "import elastic_bench, baselines, cli\n"
        "from elastic_bench import registry\n"
        "assert not registry.load_errors(), registry.load_errors()\n"
        "print(registry.get('flash-attn').unavailable_reason('cpu'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("backend", sorted(BUILTIN))
def test_recommender_shell_runs_every_usable_backend(backend):
    cls = registry.get(backend)
    causal = cls.capabilities.causal
    if cls.unavailable_reason("cpu", torch.float32, causal=causal, head_dim=8, padding=True):
        pytest.skip(cls.unavailable_reason("cpu", torch.float32, causal=causal, head_dim=8, padding=True))
    opts = {k: v for k, v in {"experts": 4, "memory_size": 64}.items() if k in cls.capabilities.options}
    model = SeqRecModel(ModelConfig.make(backend, n_items=30, max_len=12, d_model=16, heads=2, layers=2, dropout=0.0, options=opts))
    items = torch.randint(1, 31, (3, 12))
    items[0, :4] = 0
    h = model(items)
    assert h.shape == (3, 12, 16) and torch.isfinite(h).all()
    scores = model.scores(model.user_repr(items))
    assert scores.shape == (3, 31)
    scores.logsumexp(-1).sum().backward()
    assert model.item_emb.weight.grad is not None


runner = CliRunner()


def test_doctor_prints_every_backend():
    res = runner.invoke(cli.app, ["doctor"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in BUILTIN:
        assert name in res.output
    assert "torch" in res.output and "flash-attn" in res.output and "xformers" in res.output


def test_list_and_bad_list_argument():
    res = runner.invoke(cli.app, ["list", "models"], terminal_width=200)
    assert res.exit_code == 0 and "elastic-causal" in res.output
    res = runner.invoke(cli.app, ["list", "datasets"], env={"ELASTIC_BENCH_DATA": "/nonexistent"}, terminal_width=200)
    assert res.exit_code == 0 and "ml-1m" in res.output
    res = runner.invoke(cli.app, ["list", "bogus"])
    assert res.exit_code == 2


def test_console_script_starts():
    out = subprocess.run(["elastic-bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "doctor" in out.stdout, out.stderr
