"""FASP (docs/algorithms.md, "FASP"): widths from the parameter budget, the selection against an independent
computation of the metric, GQA grouping, and whole runs on the embedded real model and every family."""
from __future__ import annotations

import pytest
import torch
from conftest import FASP_SEQ_LEN as SEQ_LEN
from conftest import FASP_WINDOWS as WINDOWS
from conftest import SHARED_JOBS, assert_reloads_like, calibratable_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, OPTConfig, Phi3Config, Qwen2Config

import hubprune
from hubprune.errors import InvalidOptionError
from hubprune.families import get_family
from hubprune.methods.fasp import module_counts, widths
from hubprune.methods.compute.restoration import column_scores, restore
from hubprune.plan import PrunePlan

SPARSITIES = (SHARED_JOBS["fasp"]["sparsity"],)


def weights(folder) -> dict:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def meta_model(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def test_params_semantics_hits_the_request_and_columns_semantics_removes_fewer():
    counts = module_counts(meta_model(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                                                  num_attention_heads=32, num_key_value_heads=32)))
    for s in (0.1, 0.2, 0.3, 0.5):
        by_params = widths(counts, s, "params", 8)
        assert by_params.column_fraction / s == pytest.approx(1.199, abs=0.002)  # LLaMA-7B: rho = 1.199 s
        assert abs(by_params.predicted_sparsity - s) < 0.005 and by_params.ffn_keep % 8 == 0
        by_columns = widths(counts, s, "columns", 1)
        assert by_columns.column_fraction == s and by_columns.predicted_sparsity < s
    with pytest.raises(InvalidOptionError, match="lower --sparsity"):
        widths(counts, 0.9, "params", 8)


def test_value_widths_are_rounded_for_fast_attention_kernels_and_the_ffn_absorbs_the_difference():
    counts = module_counts(meta_model(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                                                  num_attention_heads=32, num_key_value_heads=32)))  # Llama-2-7B
    for s, unrounded, rounded in ((0.25, 90, 88), (0.3, 82, 80), (0.375, 70, 72)):
        assert widths(counts, s, "params", 1, 1).value_keep == unrounded  # what the issue measured
        w = widths(counts, s, "params", 8, 8)
        assert w.value_keep == rounded and w.ffn_keep % 8 == 0
        assert abs(w.predicted_sparsity - s) < 0.005  # the FFN width made up for the rounding


def test_flash_attention_is_claimed_only_without_value_pruned_layers():
    from hubprune.surgery import apply_plan

    model = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    skipped = apply_plan(model, PrunePlan(skip_attention=[0]))
    assert skipped._supports_flash_attn
    values = apply_plan(model, PrunePlan(keep_value_channels={1: [[0, 1, 2, 3, 4, 5, 6, 7]] * 2}))
    assert not values._supports_flash_attn


def test_gqa_unit_is_a_kv_group_channel_across_the_groups_heads():
    config = LlamaConfig(hidden_size=16, num_attention_heads=4, num_key_value_heads=2)  # head_dim 4
    family = get_family("llama")
    groups = [[0, 3], [1, 2]]
    assert family.value_columns(config, groups).tolist() == [0, 3, 4, 7, 9, 10, 13, 14]
    assert family.value_row_indices(config, groups).tolist() == [0, 3, 5, 6]
    # A channel weak in one head but strong in its group's other head is kept: scores sum per group.
    from hubprune.methods.compute.twossp_stages import top_neurons

    per_head = torch.tensor([[5., 0, 0, 1], [0, 0, 0, 9], [1, 2, 3, 4], [1, 2, 3, 4]])  # [heads, head_dim]
    assert top_neurons(per_head.view(2, 2, 4).sum(1), 2) == [[0, 3], [2, 3]]


@pytest.fixture(scope="module")
def runs(fasp_run, embedded_model, tmp_path_factory):
    """The shared FASP run (SHARED_JOBS["fasp"]) and the same job without restoration."""
    job = SHARED_JOBS["fasp"]
    plain = hubprune.prune(**{**job, "options": {**job["options"], "no_restore": True}},
                           output=tmp_path_factory.mktemp("fasp") / "plain", loaded=embedded_model)
    return {job["sparsity"]: fasp_run, "no-restore": plain}


def test_selection_and_refit_equal_an_independent_computation_on_block_0(runs, embedded_model):
    """Block 0 from whole-model forwards with hooks (no DecoderStack): H of o_proj's input, the group
    scores, the kept channels, the refit; then H of down_proj's input with that attention in place."""
    from hubprune.data import calibration_windows

    result = runs[0.3]
    plan = PrunePlan.load(result.output / "hubprune_plan.json")
    restored = load_file(result.output / "model.safetensors")
    model = embedded_model.model
    config, family = model.config, get_family("llama")
    windows, _ = calibration_windows(embedded_model.tokenizer, "default", SEQ_LEN, WINDOWS)
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp

    def gram_of(module):
        grams = []
        handle = module.register_forward_pre_hook(lambda m, a: grams.append(a[0][0].double().T @ a[0][0].double()))
        with torch.no_grad():
            for window in windows:
                model(window[None], use_cache=False)
        handle.remove()
        return sum(grams)

    h_o = gram_of(attention.o_proj)
    scores = column_scores(attention.o_proj.weight.double(), h_o).view(3, 3, 64).sum(1)
    keep = result.record["method_report"]["widths"]["value_keep"]
    expected = [sorted(torch.argsort(-row, stable=True)[:keep].tolist()) for row in scores]
    assert plan.keep_value_channels[0] == expected
    columns = family.value_columns(config, expected)
    w_o = restore(attention.o_proj.weight.double(), h_o, columns).float()
    torch.testing.assert_close(restored["model.layers.0.self_attn.o_proj.weight"], w_o, rtol=1e-3, atol=1e-4)

    original = attention.o_proj.weight.data.clone()
    attention.o_proj.weight.data.zero_()
    attention.o_proj.weight.data[:, columns] = w_o
    try:
        h_d = gram_of(mlp.down_proj)
    finally:
        attention.o_proj.weight.data = original
    ffn_keep = result.record["method_report"]["widths"]["ffn_keep"]
    neurons = sorted(torch.argsort(-column_scores(mlp.down_proj.weight.double(), h_d), stable=True)[:ffn_keep].tolist())
    assert len(set(neurons) ^ set(plan.keep_ffn_neurons[0])) <= 2  # fp32 vs fp64 statistics may swap a near-tie


@pytest.mark.slow  # 20 s of fp64 Gram matrices (make test-slow)
def test_fp32_gram_matrices_choose_like_fp64_on_real_weights(embedded_model, tmp_path):
    """The cheaper path (--fasp-gram-dtype float32, for GPUs slow at fp64) is offered because it selects
    the same channels as fp64 on the embedded model, up to near-ties, and scores the same."""
    run = dict(sparsity=0.3, device="cpu", seq_len=64, ppl=["default"], max_windows=4, loaded=embedded_model)
    plans, ppl = {}, {}
    for dtype in ("float32", "float64"):
        result = hubprune.prune("default", "fasp", output=tmp_path / dtype, **run,
                                options={"calib_samples": 8, "calib_data": "default", "fasp_gram_dtype": dtype})
        plans[dtype] = PrunePlan.load(tmp_path / dtype / "hubprune_plan.json")
        ppl[dtype] = result.record["evaluation"]["perplexity"]["default"]["pruned"]["perplexity"]
    differing = sum(len(set(plans["float32"].keep_ffn_neurons[l]) ^ set(plans["float64"].keep_ffn_neurons[l]))
                    for l in plans["float64"].keep_ffn_neurons)
    total = sum(len(v) for v in plans["float64"].keep_ffn_neurons.values())
    assert differing / total < 0.01
    assert ppl["float32"] == pytest.approx(ppl["float64"], rel=0.01)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_achieved_sparsity_is_within_half_a_percent(runs, sparsity):
    assert abs(runs[sparsity].record["sparsity"]["achieved"] - sparsity) < 0.005


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_reloaded_output_gives_the_in_memory_logits_and_cached_generation(runs, sparsity):
    assert_reloads_like(runs[sparsity].output, runs[sparsity].model)


def test_restoration_lowers_perplexity(runs):
    ppl = {k: r.record["evaluation"]["perplexity"]["default"]["pruned"]["perplexity"] for k, r in runs.items()}
    dense = runs[0.3].record["evaluation"]["perplexity"]["default"]["dense"]["perplexity"]
    assert dense < ppl[0.3] < ppl["no-restore"]


@pytest.mark.parametrize("config_class", [Qwen2Config, MistralConfig, Phi3Config, OPTConfig])
def test_every_family_prunes_and_reloads_with_the_in_memory_logits(tmp_path, config_class):
    source = calibratable_model(tmp_path / "src", config_class=config_class)
    result = hubprune.prune(str(source), "fasp", sparsity=0.3, output=tmp_path / "out", device="cpu", seq_len=64,
                            options={"calib_samples": 2, "calib_data": "default", "ffn_multiple": 1})
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, result.model(ids).logits, rtol=0, atol=1e-5)
    assert abs(result.record["sparsity"]["achieved"] - 0.3) < 0.01


def test_offload_writes_the_same_weights_as_in_memory(tmp_path):
    source = calibratable_model(tmp_path / "src")
    run = dict(sparsity=0.25, options={"calib_samples": 2, "calib_data": "default"}, seq_len=64, device="cpu")
    hubprune.prune(str(source), "fasp", output=tmp_path / "memory", **run)
    hubprune.prune(str(source), "fasp", output=tmp_path / "streamed", offload=True, **run)
    memory, streamed = weights(tmp_path / "memory"), weights(tmp_path / "streamed")
    assert memory.keys() == streamed.keys()
    for name in memory:
        torch.testing.assert_close(memory[name], streamed[name], rtol=0, atol=1e-6)


def test_opt_biases_follow_their_rows_and_stay_with_their_outputs(tmp_path):
    """OPT: fc1 and v_proj lose the bias entries of their removed rows; fc2 and out_proj keep theirs."""
    source = calibratable_model(tmp_path / "src", config_class=OPTConfig, layers=3)
    hubprune.prune(str(source), "fasp", sparsity=0.3, output=tmp_path / "out", device="cpu", seq_len=64,
                   options={"calib_samples": 4, "calib_data": "default", "ffn_multiple": 1})
    plan = PrunePlan.load(tmp_path / "out" / "hubprune_plan.json")
    dense, pruned = weights(source), weights(tmp_path / "out")
    prefix = "model.decoder.layers.1."
    neurons = plan.keep_ffn_neurons[1]
    assert torch.equal(pruned[prefix + "fc1.bias"], dense[prefix + "fc1.bias"][neurons])
    rows = get_family("opt").value_row_indices(AutoModelForCausalLM.from_pretrained(source).config,
                                                  plan.keep_value_channels[1])
    assert torch.equal(pruned[prefix + "self_attn.v_proj.bias"], dense[prefix + "self_attn.v_proj.bias"][rows])
    for name in ("fc2.bias", "self_attn.out_proj.bias", "self_attn.q_proj.bias", "self_attn.k_proj.bias"):
        assert torch.equal(pruned[prefix + name], dense[prefix + name])
