"""A model's own Python code never runs without the user's consent: third-party folders that name code
in `auto_map` are refused without --trust-remote-code, and hubprune's own outputs load with hubprune's
classes whatever the .py files in their folder say. Each test plants code that leaves a marker file."""
from __future__ import annotations

import json
import pytest
import torch
from conftest import tiny_model

from hubprune.errors import RemoteCodeError
from hubprune.info import model_info
from hubprune.loading import load_model

PAYLOAD = """\
import pathlib
pathlib.Path({marker!r}).write_text("code ran")
from transformers import LlamaConfig


class EvilConfig(LlamaConfig):
    model_type = "llama"
"""


def hubprune(capsys, *args) -> tuple[int, str]:
    from hubprune.cli import main

    capsys.readouterr()  # what came before is not the command's
    code = main(list(args))
    return code, capsys.readouterr().err


def plant(folder, marker, *, where: str = "config.json"):
    (folder / "configuration_evil.py").write_text(PAYLOAD.format(marker=str(marker)))
    file = folder / where
    data = json.loads(file.read_text())
    data["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    file.write_text(json.dumps(data))


@pytest.fixture()
def stranger(tmp_path):
    """A stock Llama folder whose config names its own code."""
    folder = tmp_path / "stranger"
    tiny_model("llama").save_pretrained(folder)
    marker = tmp_path / "ran"
    plant(folder, marker)
    return folder, marker


def test_info_on_a_folder_with_its_own_code_refuses_in_one_line_and_runs_nothing(stranger, capsys):
    folder, marker = stranger
    code, err = hubprune(capsys, "info", str(folder))
    assert code == 2, err
    assert err.count("\n") == 1 and "--trust-remote-code" in err and "configuration_evil" in err
    assert not marker.exists()


def test_load_and_prune_refuse_it_too(stranger, tmp_path, capsys):
    folder, marker = stranger
    with pytest.raises(RemoteCodeError):
        load_model(str(folder), device="cpu")
    code, err = hubprune(capsys, "prune", str(folder), "--method", "shortgpt", "--sparsity", "0.2", "--calib-data",
                         "default", "--device", "cpu", "-o", str(tmp_path / "out"))
    assert code == 2 and "--trust-remote-code" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_flag_is_the_consent(stranger):
    folder, marker = stranger
    info = model_info(str(folder), trust_remote_code=True)
    assert marker.read_text() == "code ran" and info["family"] == "llama"


def test_code_named_by_the_tokenizer_config_counts_too(tmp_path):
    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    plant(folder, tmp_path / "ran", where="tokenizer_config.json")
    with pytest.raises(RemoteCodeError, match="tokenizer_config.json"):
        load_model(str(folder), device="cpu")


def test_a_hubprune_output_loads_with_our_classes_never_its_folder_code(tmp_path):
    from hubprune.plan import PrunePlan
    from hubprune.surgery import apply_plan

    model = tiny_model("llama")
    pruned = apply_plan(model, PrunePlan(skip_attention=[1], keep_ffn_neurons={0: list(range(40))}))
    folder = tmp_path / "out"
    pruned.save_pretrained(folder)
    from hubprune.export import save_companions

    save_companions(folder, pruned.config, None, plan=PrunePlan(), record=None)
    marker = tmp_path / "ran"
    for name in ("configuration_hubprune.py", "modeling_hubprune.py"):  # a tampered download
        (folder / name).write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    assert model_info(str(folder))["blocks"][1]["attention"] is False
    loaded = load_model(str(folder), device="cpu", dtype="float32", trust_remote_code=True)
    assert type(loaded.model).__module__ == "hubprune.modeling.modeling_hubprune"
    assert not marker.exists()
    ids = torch.arange(3, 20)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, pruned(ids).logits)
