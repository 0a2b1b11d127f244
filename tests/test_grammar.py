"""The sweep grammar: every accepted form, and exit code 2 with a one-line error for bad input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import cli
from bench_fakes import registered
from elastic_bench.runs import spec as spec_mod
from elastic_bench.grammar import GrammarError, parse_int_axis, parse_memory_sizes, parse_name_list

runner = CliRunner()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("256..8192", (256, 512, 1024, 2048, 4096, 8192)),
        ("256..8192:x4", (256, 1024, 4096)),
        ("256..2048:+256", (256, 512, 768, 1024, 1280, 1536, 1792, 2048)),
        ("256,1k,4k", (256, 1024, 4096)),
        ("1k..4k", (1024, 2048, 4096)),
        ("1m", (1024**2,)),
        ("2K", (2048,)),
        ("256", (256,)),
        ("300..1000", (300, 600)),
        ("256..1k, 256", (256, 512, 1024)),  # duplicates dropped, order kept
        ("64..64", (64,)),
    ],
)
def test_accepted_int_forms(text, expected):
    assert parse_int_axis(text, "--seq-len") == expected


def test_yaml_style_values():
    assert parse_int_axis(512, "--seq-len") == (512,)
    assert parse_int_axis([256, "1k"], "--seq-len") == (256, 1024)


@pytest.mark.parametrize("bad", ["256..", "8192..256", "256..8192:x1", "abc", "0", "-256", "256..8192:+0", "..8", "1.5k", ""])
def test_malformed_int_forms(bad):
    with pytest.raises(GrammarError) as e:
        parse_int_axis(bad, "--seq-len")
    msg = str(e.value)
    assert msg.startswith("--seq-len:") and "\n" not in msg and "accepted" in msg


def test_memory_sizes():
    assert parse_memory_sizes("0,1k,4k,16k,64k,256k,1m") == (0, 1024, 4096, 16384, 65536, 262144, 1048576)
    assert parse_memory_sizes("1024..4096:x4") == (1024, 4096)
    with pytest.raises(GrammarError, match="perfect square.*1k=32²"):
        parse_memory_sizes("2k")


def test_name_lists():
    assert parse_name_list("infer, train_step,infer", "--pass", ["infer", "train_step"]) == ("infer", "train_step")
    with pytest.raises(GrammarError, match="--pass: unknown value 'trian'"):
        parse_name_list("trian", "--pass", ["infer", "train_step"])


def _sweep(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "g.csv"
    with registered():
        result = runner.invoke(cli.app, ["sweep", "--dry-run", "--out", str(out), "--models", "fake-exact", *args])
    return result, out


BAD_INPUT = [
    (["--seq-len", "256.."], "--seq-len"),
    (["--seq-len", "8192..256"], "--seq-len"),
    (["--seq-len", "256..8192:x1"], "--seq-len"),
    (["--seq-len", "abc"], "--seq-len"),
    (["--seq-len", "0"], "--seq-len"),
    (["--seq-len", "-256"], "--seq-len"),
    (["--batch", "0"], "--batch"),
    (["--tokens-per-batch", "-1"], "--tokens-per-batch"),
    (["--memory-size", "1000"], "--memory-size"),
    (["--experts", "abc"], "--experts"),
    (["--dtype", "fp8"], "--dtype"),
    (["--pass", "inference"], "--pass"),
    (["--level", "layer"], "--level"),
    (["--heads", "3"], "--heads"),
    (["--batch", "4", "--tokens-per-batch", "4k"], "--batch"),
    (["--device", "tpu"], "--device"),
    (["--repeats", "abc"], "--repeats"),
    (["--min-time", "-1"], "--min-time"),
    (["--option", "chunk_size"], "--option"),
]


@pytest.mark.parametrize("args, arg", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_cli_bad_input_exits_2(args, arg, tmp_path, monkeypatch):
    result, out = _sweep(["--seq-len", "16..32", *args] if args[0] != "--seq-len" else args, tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and arg in lines[0], result.output
    assert not out.exists() and not (tmp_path / "reports").exists()


def test_cli_unknown_model_suggests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with registered():
        result = runner.invoke(cli.app, ["sweep", "--dry-run", "--seq-len", "16", "--models", "fake-exakt"])
    assert result.exit_code == 2
    assert "--models" in result.output and "did you mean 'fake-exact'" in result.output


def test_cli_experts_longer_than_sequence(tmp_path, monkeypatch):
    result, _ = _sweep(["--seq-len", "16,32", "--models", "fake-experts", "--experts", "8,64"], tmp_path, monkeypatch)
    assert result.exit_code == 2 and "--experts: 64 experts > --seq-len 16" in result.output


def test_cli_dtype_the_device_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_mod, "dtype_unsupported", lambda device, dtype: "no fp16 kernels" if dtype == "fp16" else None)
    result, _ = _sweep(["--seq-len", "16", "--dtype", "fp32,fp16"], tmp_path, monkeypatch)
    assert result.exit_code == 2 and "--dtype: cpu cannot run fp16 (no fp16 kernels)" in result.output


def test_cli_dry_run_prints_grid_and_writes_nothing(tmp_path, monkeypatch):
    result, out = _sweep(
        ["--seq-len", "16..64", "--models", "fake-exact,fake-experts", "--experts", "2,4", "--memory-size", "0,1k"],
        tmp_path,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    # experts x memory-size crossed only with fake-experts; fake-exact in both causalities (--causal auto):
    # 3 lengths x (2 + 2*2)
    assert "Grid: 18 cells" in result.output
    assert not out.exists()


def test_config_file_and_cli_override(tmp_path, monkeypatch):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("seq-len: 16..64\nmodels: [fake-exact]\npass: infer,train_step\nrepeats: 3\n")
    with registered():
        s = spec_mod.load_spec({"seq_len": "32", "device": "cpu"}, cfg)
    assert s.seq_lens == (32,) and s.models == ("fake-exact",) and s.passes == ("infer", "train_step") and s.repeats == 3
    cfg.write_text("seq-lenn: 16\n")
    with pytest.raises(GrammarError, match="--config: unknown key 'seq-lenn'"):
        spec_mod.load_spec({}, cfg)


def test_help_states_the_cpu_defaults():
    result = runner.invoke(cli.app, ["sweep", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for key in ("tokens-per-batch", "repeats", "min-time"):
        value = str(spec_mod.CPU_DEFAULTS[key.replace("-", "_")])
        assert f"{key} {value}" in text, (key, value)
