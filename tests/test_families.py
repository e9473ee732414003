"""Every method on every family: each tiny model of the matrix (the ten families, and Llama with the Llama
3.x settings; shaped by a real model's published config where tests/configs has one) is pruned by every
method; what a method cannot do to a family is refused up front in one line, and everything else reloads
from disk as the model it was in memory."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import (FAMILIES, MATRIX_CONFIGS, REAL_CONFIGS, assert_reloads_like, calibratable_model, model_type,
                      tiny_model)
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import hubprune
from hubprune.cli import main
from hubprune.export import save_model_folder
from hubprune.families import get_family
from hubprune.methods import methods
from hubprune.plan import PrunePlan
from hubprune.surgery import apply_plan

# SliceGPT folds each block's input norm into the linear layers after it and rotates the residual stream.
# That needs a plain RMSNorm before each sub-module and nothing after it: OPT's LayerNorm centres, OLMo 2/3
# put their norms after the sub-modules, Gemma 3 has both and norms of the form x·(1 + w).
NO_SLICEGPT = {"gemma3_text", "olmo2", "olmo3", "opt"}


def test_the_refusals_are_the_families_that_cannot_fold_their_norms():
    assert {name for name in FAMILIES if not get_family(model_type(name)).residual_slicing} == NO_SLICEGPT


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_prunes_the_family_or_is_refused(family, method_outputs):
    _, results, refused = method_outputs(family)
    assert set(refused) == ({"slicegpt"} if family in NO_SLICEGPT else set())
    assert set(results) | set(refused) == set(methods())
    for method, result in results.items():
        assert result.record["job"]["method"] == method
        assert_reloads_like(result.output, result.model)


@pytest.mark.parametrize("family", sorted(NO_SLICEGPT))
def test_a_method_that_cannot_apply_is_refused_in_one_line_before_any_work(family, method_outputs, tmp_path,
                                                                              capsys):
    source, _, _ = method_outputs(family)
    code = main(["prune", str(source), "--method", "slicegpt", "--sparsity", "0.25", "--output",
                 str(tmp_path / "out"), "--device", "cpu", "--calib-data", "default"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "slicegpt" in err and model_type(family) in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", [f for f in FAMILIES if "sliding_attention" in get_family(model_type(f))
                                    .source_layer_types(tiny_model(f).config)])
def test_sliding_window_layers_keep_their_window_in_the_pruned_kv_cache(family, tmp_path):
    """A pruned sliding-window layer caches only its window; a full-attention layer caches everything."""
    dense = tiny_model(family)
    plan = PrunePlan(skip_attention=[0], keep_ffn_neurons={1: list(range(40))})
    save_model_folder(tmp_path, apply_plan(dense, plan), None, plan=plan, record={})
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    window = model.config.sliding_window
    ids = torch.randint(3, 128, (1, 3 * window), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = model(ids, use_cache=True).cache
    kinds = model.config.layer_types
    assert kinds[0] == "moe" and "sliding_attention" in kinds
    for index, kind in enumerate(kinds):
        if kind != "moe":
            cached = cache.layers[index].keys.shape[-2]
            assert cached == (ids.shape[1] if kind == "full_attention" else window - 1), (index, kind, cached)


@pytest.mark.parametrize("family", sorted(REAL_CONFIGS))
def test_the_command_line_prunes_a_model_shaped_by_a_published_config(family, method_outputs, tmp_path, capsys):
    """`hubprune prune` on a folder whose config is a real model's (tests/configs), shrunk: random weights."""
    source, _, _ = method_outputs(family)
    code = main(["prune", str(source), "--method", "2ssp", "--sparsity", "0.25", "--alpha", "1.0", "--output",
                 str(tmp_path / "out"), "--device", "cpu", "--calib-data", "default", "--calib-samples", "2",
                 "--stage2-samples", "1", "--seq-len", "32"])
    assert code == 0, capsys.readouterr().err[-2000:]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"].removeprefix("hubprune_") == model_type(family)  # stock, or its pruned form


def weights(folder) -> dict:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_offload_writes_the_same_weights_as_in_memory(family, tmp_path):
    """Every kind of cut on one model (a block dropped, an attention and an MLP skipped, FFN neurons and
    value channels kept), written from memory and streamed block by block from the shards."""
    source = calibratable_model(tmp_path / "src", family=family, shard="20KB")
    config = MATRIX_CONFIGS[family]()
    groups, head_dim = get_family(model_type(family)).value_groups(config)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"drop_blocks": [4], "skip_attention": [0], "skip_mlp": [2],
                                "keep_ffn_neurons": {"1": list(range(0, 96, 3))},
                                "keep_value_channels": {"3": [list(range(1, head_dim, 2))] * groups}}))
    for offload in (False, True):
        hubprune.prune(str(source), "manual", output=tmp_path / str(offload), options={"plan": str(plan)},
                       device="cpu", offload=offload)
    memory, streamed = weights(tmp_path / "False"), weights(tmp_path / "True")
    assert memory.keys() == streamed.keys()
    for name in memory:
        assert torch.equal(memory[name], streamed[name]), name


@pytest.mark.parametrize("family", FAMILIES)
def test_the_attention_branch_is_its_output_projection_then_the_branch_norm(family):
    """What FASP relies on to refit o_proj and carry the pruned states on: after a block's attention the
    residual is h + attention_branch_output(o_proj(x)), x the input o_proj saw (OLMo and Gemma 3 put a
    norm between o_proj and the residual)."""
    from hubprune.loading import LoadedModel
    from hubprune.sequential import DecoderStack

    model = tiny_model(family)
    adapter = get_family(model.config.model_type)
    stack = DecoderStack(LoadedModel(model, None, adapter, None, torch.device("cpu"), model.dtype))
    hidden = stack.embed(torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(0)))
    with stack.block(1) as layer:
        o_proj, seen = layer.get_submodule(adapter.value_cols), []
        handle = o_proj.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
        after_attention = stack.run(layer, 1, hidden, skip_mlp=True)
        handle.remove()
        with torch.no_grad():
            rebuilt = hidden + adapter.attention_branch_output(layer, o_proj(seen[0]))
    torch.testing.assert_close(rebuilt, after_attention, rtol=0, atol=1e-6)
