"""The command line: help that documents the job, and one clear line with exit code 2 for bad input."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_model


def hubprune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hubprune.cli", *args], capture_output=True, text=True, cwd=cwd)


# Runs the CLI and reports on stderr whether torch or transformers got imported on the way.
LIGHT = """\
import sys
from hubprune.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
if heavy:
    print("imported " + ", ".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def test_methods_lists_name_and_one_line():
    out = hubprune("methods")
    assert out.returncode == 0
    from hubprune.methods import methods

    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.stdout.splitlines()}
    assert listed == {name: cls.summary for name, cls in methods().items()}


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
        (["eval", "default", "--ppl", "default", "--limit", "0"], "--limit 0.0: must be greater than 0"),
        (["info", "./missing-model"], "no such model folder"),
        (["prune", "default", "--method", "manual", "--plan", "latin1.yaml", "-o", "x"], "not UTF-8"),
        (["prune", "default", "--method", "manual", "--plan", "float.yaml", "-o", "x"], "1.9 is not a whole number"),
        (["prune", "default", "--method", "2ssp", "--sparsity", "0.3", "--stage2-batch", "0", "-o", "x"], "at least 1"),
        (["prune", "default", "--method", "fasp", "--sparsity", "0.3", "--alpha", "2", "-o", "x"],
         "--alpha does not apply to --method fasp"),
        (["methods", "fsap"], "did you mean 'fasp'?"),
        (["push", "default", "--method", "2ssp", "--sparsity", "3", "--repo-id", "a/b"], "strictly between 0 and 1"),
        (["prune", "default", "--method", "manual", "--plan", "p.yaml", "-o", "x", "--heal-steps", "5"],
         "--heal-steps is a healing setting: add --heal kd"),
        (["prune", "default", "--method", "manual", "--plan", "p.yaml", "-o", "x", "--heal", "kd", "--heal-data",
          "wikitext2"], "evaluation text"),
        (["prune", "default", "--method", "manual", "--plan", "p.yaml", "-o", "x", "--heal", "kd", "--offload"],
         "needs it whole in memory"),
        (["prune", "default", "--method", "manual", "--plan", "p.yaml", "-o", "x", "--heal", "kd", "--heal-data",
          "p.yaml", "--ppl", "p.yaml"], "also in --ppl"),
        (["heal", "x", "-o", "y", "--heal-topk", "-1"], "--heal-topk -1: must be at least 0"),
        (["heal", "./missing", "-o", "y"], "no such model folder"),
        (["push", "--from-dir", "made", "--repo-id", "a/b", "--heal", "kd"], "heal it first"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2_at_once(args, message, tmp_path):
    """Refused before torch is imported (a bad option answers in well under a second)."""
    (tmp_path / "p.yaml").write_text("drop_blocks: [0]\n")
    (tmp_path / "latin1.yaml").write_bytes(b"# caf\xe9\ndrop_blocks: [0]\n")
    (tmp_path / "float.yaml").write_text("drop_blocks: [1.9]\n")
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "hubprune.json").write_text("{}")  # a hubprune output, as far as --from-dir checks
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LIGHT, *args], capture_output=True, text=True, cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # "imported torch" would be a second line
    assert out.stderr.startswith("hubprune") and message in out.stderr
    assert seconds < 5, f"{seconds:.1f} s for a bad option (generous bound for a busy 2-core machine)"


def test_help_and_methods_do_not_import_torch():
    for args in (["--help"], ["prune", "--help"], ["push", "--help"], ["heal", "--help"], ["methods"],
                 ["methods", "evopress"]):
        out = subprocess.run([sys.executable, "-c", LIGHT, *args], capture_output=True, text=True)
        assert out.returncode == 0 and "imported" not in out.stderr, (args, out.stderr)


def test_other_libraries_log_lines_keep_their_own_name():
    script = ("import logging\nfrom hubprune.cli import main\nmain(['methods'])\n"
              "logging.getLogger('transformers.modeling_utils').warning('theirs')\n"
              "logging.getLogger('hubprune').warning('ours')")
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stderr.splitlines()
    assert err == ["transformers.modeling_utils: theirs", "hubprune: ours"]


@pytest.fixture()
def tiny_folder(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "m")
    (tmp_path / "plan.yaml").write_text("drop_blocks: [0]\n")
    return tmp_path / "m"


def one_line_error(capsys, argv, message):
    """`main(argv)` in this process (a subprocess per case costs a torch import): exit 2, one line."""
    from hubprune.cli import main

    capsys.readouterr()  # what came before is not the command's
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err


def test_damaged_model_files_are_one_line(tiny_folder, capsys, monkeypatch):
    monkeypatch.chdir(tiny_folder.parent)
    weights = tiny_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for argv in (["prune", str(tiny_folder), "--method", "manual", "--plan", "plan.yaml", "-o", "out", "--device", "cpu"],
                 ["eval", str(tiny_folder), "--ppl", "default", "--device", "cpu"]):
        one_line_error(capsys, argv, "damaged or incomplete")
    (tiny_folder / "config.json").write_text('{"model_type": "llama",')
    one_line_error(capsys, ["info", str(tiny_folder)], "config.json is not valid JSON")


def test_card_on_a_corrupt_record_is_one_line(tiny_folder, tmp_path, capsys):
    import hubprune as library

    library.prune(str(tiny_folder), "manual", options={"plan": str(tmp_path / "plan.yaml")}, output=tmp_path / "out",
                  device="cpu")
    (tmp_path / "out" / "hubprune.json").write_text("{truncated")
    one_line_error(capsys, ["card", str(tmp_path / "out")], "hubprune.json is not valid JSON")


def test_eval_output_dot_is_the_current_folder(tiny_folder, tmp_path, monkeypatch):
    from hubprune.cli import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["eval", str(tiny_folder), "--speed", "--speed-tokens", "8", "--device", "cpu", "--output", "."]) == 0
    assert (work / "results.json").is_file() and not list(tmp_path.glob(".work.*"))


@pytest.mark.parametrize(("error", "message"), [
    (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "the GPU ran out of memory"),
    (MemoryError, "ran out of RAM"),
    (lambda: Exception("No space left on device (os error 28)"), "the disk is full"),
])
def test_running_out_of_memory_or_disk_mid_job_is_one_line(tiny_folder, monkeypatch, capsys, error, message):
    """The real failures need a full GPU or disk; the job is made to raise exactly what torch and the
    Rust writers raise then."""
    from hubprune import pipeline
    from hubprune.cli import main

    def fail(*args, **kwargs):
        raise error()

    monkeypatch.setattr(pipeline, "run_job", fail)
    code = main(["prune", str(tiny_folder), "--method", "manual", "--plan", str(tiny_folder.parent / "plan.yaml"),
                 "-o", str(tiny_folder.parent / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert "--offload" in err or "larger disk" in err


def test_unsupported_architecture_and_existing_output(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "plan.yaml").write_text("drop_blocks: [0]\n")
    out = hubprune("prune", str(tmp_path / "gpt2"), "--method", "manual", "--plan", str(tmp_path / "plan.yaml"),
                   "-o", str(tmp_path / "out"))
    from hubprune.families import FAMILIES

    assert out.returncode == 2 and f"not supported; hubprune supports: {', '.join(sorted(FAMILIES))}" in out.stderr
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
