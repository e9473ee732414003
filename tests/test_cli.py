"""The command line: help that documents the job, and one clear line with exit code 2 for bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import tiny_model


def hubprune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hubprune.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_methods_lists_name_and_one_line():
    out = hubprune("methods")
    assert out.returncode == 0
    from hubprune.methods import METHODS

    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.stdout.splitlines()}
    assert listed == {name: cls.summary for name, cls in METHODS.items()}


def test_help_documents_commands_plan_format_and_examples():
    top = hubprune("--help").stdout
    for word in ("prune", "eval", "methods", "info", "examples:", "HF_TOKEN", "exit status"):
        assert word in top
    prune_help = hubprune("prune", "--help").stdout
    for word in ("--device", "--dtype", "--seed", "--output", "--sparsity", "keep_ffn_neurons", "drop_blocks"):
        assert word in prune_help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "default", "--method", "sparsegpt", "-o", "x"], "unknown method 'sparsegpt'"),
        (["prune", "default", "--method", "manul", "-o", "x"], "did you mean 'manual'?"),
        (["prune", "default", "--method", "manual", "--sparsity", "1.5", "-o", "x"], "strictly between 0 and 1"),
        (["prune", "default", "--method", "manual", "-o", "x"], "needs --plan"),
        (["prune", "default", "--method", "manual", "--plan", "p.yaml"], "needs --output"),
        (["prune", "./missing-model", "--method", "manual", "--plan", "p.yaml", "-o", "x"], "no such model folder"),
        (["prune", "default", "--dtype", "int3", "--method", "manual"], "invalid choice: 'int3'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["eval", "default"], "nothing to evaluate"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(args, message, tmp_path):
    (tmp_path / "p.yaml").write_text("drop_blocks: [0]\n")
    out = hubprune(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("hubprune") and message in out.stderr
    assert "Traceback" not in out.stderr


def test_unsupported_architecture_and_existing_output(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "plan.yaml").write_text("drop_blocks: [0]\n")
    out = hubprune("prune", str(tmp_path / "gpt2"), "--method", "manual", "--plan", str(tmp_path / "plan.yaml"),
                   "-o", str(tmp_path / "out"))
    assert out.returncode == 2 and "not supported; hubprune supports: llama, mistral, opt, phi3, qwen2" in out.stderr
    (tmp_path / "exists").mkdir()
    out = hubprune("prune", str(tmp_path / "gpt2"), "--method", "manual", "--plan", str(tmp_path / "plan.yaml"),
                   "-o", str(tmp_path / "exists"))
    assert out.returncode == 2 and "already exists; pass --overwrite" in out.stderr


def test_prune_and_info_on_a_local_model(tmp_path):
    tiny_model("mistral").save_pretrained(tmp_path / "src")
    (tmp_path / "plan.yaml").write_text("skip_attention: [0]\ndrop_blocks: [4]\n")
    out = hubprune("prune", str(tmp_path / "src"), "--method", "manual", "--plan", str(tmp_path / "plan.yaml"),
                   "-o", str(tmp_path / "out"), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "output:" in out.stdout and "hubprune remote code" in out.stdout
    info = hubprune("info", str(tmp_path / "out"))
    assert info.returncode == 0, info.stderr
    assert "skipped" in info.stdout and "--method manual" in info.stdout
