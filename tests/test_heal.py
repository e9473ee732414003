"""Healing after pruning (`--heal kd`, `hubprune heal`): distillation from the dense model that lowers
held-out perplexity, LoRA merged into the weights, gradients through every method's output, and a run
interrupted mid-training that resumes to the same weights as one that never stopped."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import assert_reloads_like, calibratable_model
from safetensors.torch import load_file

import hubprune
from hubprune.errors import InsufficientResourcesError
from hubprune.heal.settings import HealSettings
from hubprune.heal.teacher import kd_loss
from hubprune.heal.train import Healer, check_fits, estimate_bytes, frozen_modules

PLAN = {"skip_attention": [1], "skip_mlp": [2], "keep_ffn_neurons": {"3": list(range(0, 128, 2))}}


def weights(folder) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def read(folder, name="hubprune.json") -> dict:
    return json.loads((folder / name).read_text())


# -- the loss ---------------------------------------------------------------------------------------------

def test_kd_loss_is_forward_kl_and_top_k_renormalises():
    g = torch.Generator().manual_seed(0)
    teacher = torch.log_softmax(torch.randn(2, 5, 50, generator=g) * 3, -1)
    student = torch.randn(2, 5, 50, generator=g)
    expected = torch.nn.functional.kl_div(torch.log_softmax(student, -1), teacher, log_target=True,
                                          reduction="sum") / 10
    assert torch.allclose(kd_loss(student, teacher, None), expected, atol=1e-6)
    assert kd_loss(teacher.clone(), teacher, None).abs() < 1e-6  # zero when the student is the teacher
    ids = torch.argsort(teacher, -1, descending=True)
    full_as_topk = kd_loss(student, teacher.gather(-1, ids), ids)
    assert torch.allclose(full_as_topk, expected, atol=1e-5)  # k = vocabulary: exactly the KL
    top = teacher.topk(8, -1)
    partial = kd_loss(student, top.values, top.indices)
    assert partial >= 0 and not torch.allclose(partial, expected)


# -- on the embedded SmolLM2-135M --------------------------------------------------------------------------

HEAL = {"steps": 16, "batch": 4}  # under two minutes on two cores


@pytest.fixture(scope="module")
def healed_2ssp(twossp_runs, tmp_path_factory):
    """The embedded model pruned by 2SSP at 25 % (the 2SSP tests' run), healed with LoRA by `hubprune heal`
    against its recorded source; held-out perplexity of dense, pruned and healed in one run."""
    folder = tmp_path_factory.mktemp("heal-2ssp")
    result = hubprune.heal_output(str(twossp_runs[0.25].output), output=folder / "healed", heal=HEAL, seq_len=128,
                                  ppl=["default"], max_windows=8, device="cpu")
    return folder / "healed", result


def test_healing_lowers_held_out_perplexity(healed_2ssp):
    folder, result = healed_2ssp
    ppl = read(folder, "results.json")["perplexity"]["default"]
    dense, pruned, healed = (ppl[r]["perplexity"] for r in ("dense", "pruned", "healed"))
    assert ppl["protocol"]["corpus"]["split"] == "evaluation"  # held-out text, not the calibration part
    assert read(folder)["heal"]["data"]["split"] == "calibration"
    assert healed < 0.9 * pruned, (dense, pruned, healed)  # a clear margin, not noise
    assert dense < healed  # healing recovers part of the loss, it does not invent quality
    heal = read(folder)["heal"]
    assert heal["loss"]["last"] < heal["loss"]["first"]
    assert heal["tokens"] == 16 * 4 * 128 and heal["settings"]["params"] == "lora"


def test_healed_lora_output_is_merged_and_reloads_without_peft(healed_2ssp):
    folder, result = healed_2ssp
    assert not any("lora" in name for name in weights(folder))
    assert_reloads_like(folder, result.model)
    code = ("import sys; sys.modules['peft'] = None\n"  # importing peft would now fail
            "from transformers import AutoModelForCausalLM\n"
            f"AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_card_says_healed_and_repeats_the_heal_settings(healed_2ssp):
    from hubprune.card import render_card

    folder, _ = healed_2ssp
    card = str(render_card(folder, repo_id="me/healed"))
    assert "**Healed after pruning**" in card and "| dense | pruned | healed |" in card
    assert "--heal kd --heal-steps 16 " in card and "--method 2ssp --sparsity 0.25" in card
    assert "heal:" in card and "steps: 16" in card  # the recipe


# -- tiny models: every method, both modes, resume ---------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heal-tiny")
    source = calibratable_model(folder / "src")
    (folder / "plan.json").write_text(json.dumps(PLAN))
    return source, folder / "plan.json"


def prune_tiny(tiny_source, output, **heal):
    source, plan = tiny_source
    return hubprune.prune(str(source), "manual", output=output, options={"plan": str(plan)}, device="cpu", seq_len=32,
                          heal={"method": "kd", "data": "default", "steps": 6, "batch": 2, "save_every": 2, **heal})


@pytest.mark.parametrize("params", ["lora", "all"])
def test_both_modes_train_and_keep_the_output_format(tiny_source, tmp_path, params):
    unhealed = hubprune.prune(str(tiny_source[0]), "manual", output=tmp_path / "plain", device="cpu", seq_len=32,
                              options={"plan": str(tiny_source[1])})
    healed = prune_tiny(tiny_source, tmp_path / "healed", params=params, lr=1e-2)
    before, after = weights(tmp_path / "plain"), weights(tmp_path / "healed")
    assert {n: t.shape for n, t in before.items()} == {n: t.shape for n, t in after.items()}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and not any("embed" in n or "lm_head" in n for n in changed)  # embeddings and head stay
    assert all(".layers." in n or n == "model.norm.weight" for n in changed)
    if params == "lora":  # only the linear layers carry adapters: norms stay
        assert not any("norm" in n for n in changed)
    assert_reloads_like(tmp_path / "healed", healed.model)
    assert unhealed.record.get("heal") is None and healed.record["heal"]["settings"]["params"] == params


def test_gradient_checkpointing_changes_memory_not_results(tiny_source, tmp_path):
    plain = prune_tiny(tiny_source, tmp_path / "plain", params="all", lr=1e-2)
    checkpointed = prune_tiny(tiny_source, tmp_path / "checkpointed", params="all", lr=1e-2, checkpointing=True)
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "checkpointed")
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert plain.record["heal"]["loss"]["per_step"] == pytest.approx(checkpointed.record["heal"]["loss"]["per_step"])


def test_interrupted_healing_resumes_to_the_same_weights(tiny_source, tmp_path, monkeypatch):
    once = prune_tiny(tiny_source, tmp_path / "once", params="all", lr=1e-2)
    saves = []
    original = Healer._save

    def interrupted(self, module, optimizer, step, losses):
        original(self, module, optimizer, step, losses)
        saves.append(step)
        if step == 4:
            raise KeyboardInterrupt  # what Ctrl-C raises, right after the second checkpoint

    monkeypatch.setattr(Healer, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prune_tiny(tiny_source, tmp_path / "twice", params="all", lr=1e-2)
    assert not (tmp_path / "twice").exists() and (tmp_path / ".twice.hubprune-run" / "heal" / "checkpoint.pt").is_file()
    monkeypatch.setattr(Healer, "_save", original)
    resumed = prune_tiny(tiny_source, tmp_path / "twice", params="all", lr=1e-2)
    assert resumed.record["heal"]["resumed_at_step"] == 4 and resumed.record["heal"]["teacher"]["reused"]
    assert resumed.record["heal"]["loss"]["per_step"] == once.record["heal"]["loss"]["per_step"]
    a, b = weights(tmp_path / "once"), weights(tmp_path / "twice")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)  # bit for bit


def test_gradients_reach_every_trainable_weight_of_every_method_output(method_outputs):
    """The remote-code model trains: skipped sub-modules, value-pruned attention (FASP), SliceGPT's
    shortcut matrices, and the stock outputs of block-removing methods."""
    from hubprune.loading import load_model

    _, results, _ = method_outputs("llama")
    for method, result in results.items():
        loaded = load_model(str(result.output), device="cpu", dtype="float32")
        model = loaded.model.train()
        frozen = frozen_modules(model, loaded.family)
        trainable = {n: p for n, p in model.named_parameters() if id(p) not in frozen}
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
        ids = torch.randint(3, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
        teacher = torch.log_softmax(torch.randn(2, 16, model.config.vocab_size), -1)
        kd_loss(model(input_ids=ids).logits, teacher, None).backward()
        missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, (method, missing)
        if method == "slicegpt":
            assert any("shortcut_Q" in n for n in trainable)


def test_value_pruned_output_heals_with_lora(method_outputs, tmp_path):
    """FASP's narrower v/o projections take adapters of their own width and merge back."""
    from hubprune.heal.teacher import TeacherDistributions
    from hubprune.loading import load_model
    from hubprune.sequential import DecoderStack

    source, results, _ = method_outputs("llama")
    dense = load_model(str(source), device="cpu", dtype="float32")
    windows = torch.randint(3, dense.model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    teacher = TeacherDistributions(tmp_path / "teacher", windows, dense.model.lm_head.out_features, 16)
    teacher.compute(DecoderStack(dense), windows, progress=False)
    assert 0 < teacher.mass <= 1
    student = load_model(str(results["fasp"].output), device="cpu", dtype="float32")
    shapes = {n: p.shape for n, p in student.model.named_parameters()}
    settings = HealSettings(method="kd", steps=2, batch=2, lr=1e-2)
    healed, report = Healer(student.model, student.family, teacher, windows, settings, folder=tmp_path / "heal",
                            seed=0, device=torch.device("cpu"), progress=False).run()
    assert {n: p.shape for n, p in healed.named_parameters()} == shapes
    assert report["trainable_parameters"] > 0 and report["teacher"]["kept_tokens"] == 16


def test_training_that_would_not_fit_is_refused_with_the_numbers(tiny_source):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_source[0])
    parts = estimate_bytes(model, HealSettings(method="kd", batch=4096), 4096, 10**6)
    with pytest.raises(InsufficientResourcesError, match=r"healing needs about .* GiB more .*--heal-params lora, "
                                                         r"--heal-gradient-checkpointing"):
        check_fits(parts, torch.device("cpu"))
    check_fits(estimate_bytes(model, HealSettings(method="kd"), 32, 10**4), torch.device("cpu"))  # a small one fits


def test_heal_command_heals_an_existing_output(tiny_source, tmp_path, capsys):
    from hubprune.cli import main

    source, plan = tiny_source
    hubprune.prune(str(source), "manual", output=tmp_path / "pruned", options={"plan": str(plan)}, device="cpu",
                   seq_len=32)
    args = ["heal", str(tmp_path / "pruned"), "-o", str(tmp_path / "healed"), "--heal-data", "default",
            "--heal-steps", "2", "--heal-batch", "2", "--ppl", "default", "--max-windows", "2", "--device", "cpu"]
    assert main(args) == 2 and "pass --teacher PATH" in capsys.readouterr().err  # a local source is not recorded
    assert main([*args, "--teacher", str(source)]) == 0
    record = read(tmp_path / "healed")
    assert record["heal"]["healed_by"] == "hubprune heal" and record["job"]["heal"]["steps"] == 2
    assert set(read(tmp_path / "healed", "results.json")["models"]) == {"dense", "pruned", "healed"}
    assert weights(tmp_path / "healed").keys() == weights(tmp_path / "pruned").keys()
    capsys.readouterr()
    assert main(["heal", str(tmp_path / "healed"), "-o", str(tmp_path / "again"), "--teacher", str(source)]) == 2
    assert "already healed" in capsys.readouterr().err
