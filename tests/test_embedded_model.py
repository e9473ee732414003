"""The whole job on the embedded real model (SmolLM2-135M-Instruct) and real held-out prose."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hubprune
from hubprune.data import load_corpus, token_windows
from hubprune.evaluation.perplexity import perplexity
from hubprune.plan import PrunePlan

SEQ_LEN, WINDOWS = 256, 4
PLAN = {"skip_attention": [0, 27], "skip_mlp": [26], "drop_blocks": [28],
        "keep_ffn_neurons": {"25": list(range(0, 1536, 2))}}


def test_embedded_model_is_the_real_pretrained_smollm2(embedded_model):
    config = embedded_model.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    windows = token_windows(embedded_model.tokenizer, load_corpus("default"), SEQ_LEN, WINDOWS)
    ppl = perplexity(embedded_model.model, windows, progress=False).perplexity
    assert 5 < ppl < 60  # a random model of this vocabulary would be near 49152


@pytest.fixture(scope="module")
def pruned_run(embedded_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    (folder / "plan.json").write_text(json.dumps(PLAN))
    result = hubprune.prune("default", "manual", options={"plan": str(folder / "plan.json")}, output=folder / "out",
                            ppl=["default"], seq_len=SEQ_LEN, max_windows=WINDOWS, loaded=embedded_model)
    return folder, result


def test_output_reloads_with_the_in_memory_logits(pruned_run, embedded_model):
    folder, result = pruned_run
    reloaded = AutoModelForCausalLM.from_pretrained(folder / "out", trust_remote_code=True).eval()
    windows = token_windows(embedded_model.tokenizer, load_corpus("default"), SEQ_LEN, WINDOWS)
    # The pruned model's perplexity recorded during the run is reproduced by the reloaded folder.
    recorded = result.record["evaluation"]["perplexity"]["default"]["pruned"]["perplexity"]
    assert perplexity(reloaded, windows, progress=False).perplexity == pytest.approx(recorded, rel=1e-5)
    dense = result.record["evaluation"]["perplexity"]["default"]["dense"]["perplexity"]
    assert recorded > dense  # removing parts of a trained model costs something


def test_output_records_plan_settings_and_sparsity(pruned_run, embedded_model):
    folder, result = pruned_run
    out = folder / "out"
    saved_plan = PrunePlan.load(out / "hubprune_plan.json")
    assert saved_plan == PrunePlan.from_dict(PLAN).normalized(30)
    record = json.loads((out / "hubprune.json").read_text())
    assert record["job"]["method"] == "manual" and record["job"]["seed"] == 0
    assert record["source"]["repo_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    dense_layer = sum(p.numel() for p in embedded_model.model.model.layers[0].parameters())
    mlp = sum(p.numel() for p in embedded_model.model.model.layers[0].mlp.parameters()) + 576
    attention = dense_layer - mlp
    removed = 2 * attention + mlp + dense_layer + (1536 // 2) * 3 * 576
    assert record["sparsity"]["achieved"] == pytest.approx(removed / (30 * dense_layer), rel=1e-9)
    config = json.loads((out / "config.json").read_text())
    assert config["hubprune"]["sparsity_achieved"] == pytest.approx(record["sparsity"]["achieved"], abs=1e-6)
    assert (out / "tokenizer.json").is_file()


def test_replaying_the_saved_plan_rebuilds_the_same_weights(pruned_run, embedded_model):
    folder, _ = pruned_run
    hubprune.prune("default", "manual", options={"plan": str(folder / "out" / "hubprune_plan.json")},
                   output=folder / "replay", loaded=embedded_model)
    first, second = load_file(folder / "out" / "model.safetensors"), load_file(folder / "replay" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_info_reports_structure_and_parameter_counts(pruned_run):
    folder, result = pruned_run
    info = hubprune.model_info(str(folder / "out"))
    assert info["layers"] == 29 and info["parameters"] == result.record["parameters"]["pruned"]["total"]
    assert [b["layer"] for b in info["blocks"] if not b["attention"]] == [0, 27]  # block 28 dropped: 27 keeps its index


def test_evaluate_loads_the_pruned_folder_and_its_source_as_baseline(pruned_run, tmp_path):
    folder, result = pruned_run
    results = hubprune.evaluate(str(folder / "out"), ppl=["default"], seq_len=SEQ_LEN, max_windows=WINDOWS,
                                output=tmp_path, device="cpu")
    recorded = result.record["evaluation"]["perplexity"]["default"]
    for role in ("dense", "pruned"):  # the baseline is the source recorded in hubprune.json
        assert results["perplexity"]["default"][role]["perplexity"] == pytest.approx(recorded[role]["perplexity"],
                                                                                     rel=1e-5)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["perplexity"]["default"]["protocol"]["corpus"]["split"] == "evaluation"
    assert saved["models"]["pruned"]["parameters"] == result.record["parameters"]["pruned"]["total"]
    assert saved["models"]["dense"]["parameters"] == result.record["parameters"]["dense"]["total"]


@pytest.mark.slow
def test_a_gguf_file_loads_like_its_converted_folder(embedded_model):
    from hubprune.embedded import default_model_gguf
    from hubprune.loading import load_model

    from_gguf = load_model(str(default_model_gguf()), device="cpu", dtype="float32")
    ids = torch.arange(5, 40)[None]
    with torch.no_grad():
        assert torch.equal(from_gguf.model(ids).logits, embedded_model.model(ids).logits)
