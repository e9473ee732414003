"""SliceGPT (docs/algorithms.md, "SliceGPT"): widths and true parameter fractions against the spec's table, rotation
invariance at full width, the sliced model against the dense model with its residual stream projected
(bases recovered from the exported weights), the PCA against an independent eigendecomposition, and
whole runs on the embedded real model, every RMSNorm family and a streamed model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import FAMILIES, assert_reloads_like, calibratable_model, left_padded_batch, model_type, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

import hubprune
from hubprune.card import write_card
from hubprune.errors import InvalidOptionError, UnsupportedArchitectureError
from hubprune.families import get_family
from hubprune.loading import LoadedModel
from hubprune.methods.slicegpt import slicing
from hubprune.methods.compute.slicegpt_blocks import DAMPING, rotate_and_slice
from hubprune.plan import PrunePlan
from hubprune.runs import LayerTensors
from hubprune.sequential import DecoderStack
from hubprune.surgery import apply_plan

SLICED_FAMILIES = [f for f in FAMILIES if get_family(model_type(f)).residual_slicing]


def meta_model(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def weights(folder) -> dict:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def sliced(model, width: int, ids: torch.Tensor, folder, orientation: str = "random"):
    """`model` rotated (and sliced to `width`) on calibration tokens `ids`, built in memory."""
    family = get_family(model.config.model_type)
    loaded = LoadedModel(model, None, family, None, torch.device("cpu"), model.dtype)
    restored = LayerTensors(folder)
    rotate_and_slice(DecoderStack(loaded), ids, width, restored, orientation=orientation, progress=False)
    return apply_plan(model, PrunePlan(residual_width=width), overrides=restored)


def calibration_ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (6, 24), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config, expected", [
    (LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000), [(3072, 15.5), (2560, 30.7), (2048, 45.4)]),
    (MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=32768), [(3072, 16.1), (2560, 31.1), (2048, 45.7)]),
    (Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064), [(2688, 18.5), (2240, 32.8), (1792, 46.7)]),
], ids=["llama-2-7b", "mistral-7b", "qwen2.5-7b"])
def test_width_and_removed_parameter_fraction_match_the_spec_table(config, expected):
    """d' per sparsity, and the true decoder-parameter fraction counted on the sliced architecture."""
    model = meta_model(config)
    for sparsity, (width, percent) in zip((0.25, 0.375, 0.5), expected):
        s = slicing(model, sparsity)
        assert s.residual_width == width and s.residual_width % 8 == 0
        assert round(100 * s.predicted_sparsity, 1) == percent


@pytest.mark.parametrize("family", SLICED_FAMILIES)
def test_full_width_rotation_leaves_the_logits_unchanged(family, tmp_path):
    """s = 0: every weight rotated, norms folded, shortcuts in place, nothing sliced -> the dense model."""
    dense = tiny_model(family)
    rotated = sliced(dense, dense.config.hidden_size, calibration_ids(), tmp_path)
    ids = calibration_ids(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(rotated(ids).logits, dense(ids).logits, rtol=0, atol=1e-5)
    assert not torch.equal(rotated.model.embed_tokens.weight, dense.model.embed_tokens.weight)  # it did rotate


def recovered_bases(dense, pruned) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The orthonormal bases the pruned weights were rotated into, solved back from them by least squares:
    E_rot = E·P_emb, o_rot = P_midᵀ·W_o, down_rot = P_outᵀ·W_down (fp64)."""
    def solve(a, b):  # X with a·X = b
        return torch.linalg.lstsq(a.double(), b.double()).solution

    p_embedding = solve(dense.model.embed_tokens.weight, pruned.model.embed_tokens.weight)
    layers = []
    for source, target in zip(dense.model.layers, pruned.model.layers):
        p_mid = solve(source.self_attn.o_proj.weight.T, target.self_attn.o_proj.weight.T)
        p_out = solve(source.mlp.down_proj.weight.T, target.mlp.down_proj.weight.T)
        layers.append((p_mid, p_out))
    return p_embedding, layers


def test_sliced_model_is_the_dense_model_with_its_residual_stream_projected(tmp_path):
    """The pruned model equals the *dense* blocks run with the residual projected onto the kept
    directions after the embeddings and after every attention and MLP (bases from the exported weights)."""
    dense = tiny_model("llama")
    pruned = sliced(dense, 32, calibration_ids(), tmp_path)
    p_embedding, layers = recovered_bases(dense, pruned)
    for basis in [p_embedding] + [p for pair in layers for p in pair]:
        torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-4, rtol=0)
    assert p_embedding.shape == (64, 32) and layers[-1][1].shape == (64, 64)  # the head is not sliced

    stack = DecoderStack(LoadedModel(dense, None, get_family("llama"), None, torch.device("cpu"), dense.dtype))
    ids = calibration_ids(seed=1)

    def project(h, basis):
        return ((h.double() @ basis) @ basis.T).float()

    with torch.no_grad():
        h = project(stack.embed(ids), p_embedding)
        for index, (p_mid, p_out) in enumerate(layers):
            layer = dense.model.layers[index]
            h = project(stack.run(layer, index, h, skip_mlp=True), p_mid)
            h = project(stack.run(layer, index, h, skip_attention=True), p_out)
        expected = stack.logits(h)
        torch.testing.assert_close(pruned(ids).logits, expected, rtol=0, atol=1e-4)
        assert (pruned(ids).logits - dense(ids).logits).abs().max() > 1e-2  # slicing did change the model


def test_pca_basis_is_the_leading_eigenvectors_and_random_orientation_spans_the_same_space(tmp_path):
    dense = tiny_model("llama")
    ids = calibration_ids()
    by_pca = sliced(dense, 32, ids, tmp_path / "pca", orientation="pca")
    by_random = sliced(dense, 32, ids, tmp_path / "random", orientation="random")
    p_pca, _ = recovered_bases(dense, by_pca)
    p_random, _ = recovered_bases(dense, by_random)
    x = dense.model.embed_tokens(ids).detach().double().reshape(-1, 64).numpy()
    h = x.T @ x
    h += DAMPING * np.mean(np.diag(h)) * np.eye(64)
    values, vectors = np.linalg.eigh(h)
    leading = torch.from_numpy(vectors[:, np.argsort(values)[::-1][:32]].copy())
    torch.testing.assert_close((leading * p_pca).sum(0).abs(), torch.ones(32, dtype=torch.float64), atol=1e-4, rtol=0)
    overlap = (p_pca.T @ p_random).pow(2).sum()  # = 32 when both span the same subspace
    assert overlap.item() == pytest.approx(32, abs=1e-3)
    assert not torch.allclose(p_pca, p_random, atol=1e-2)


@pytest.mark.parametrize("family", SLICED_FAMILIES)
def test_every_family_reloads_and_generates_with_the_kv_cache(family, tmp_path):
    from hubprune.export import save_model_folder

    plan = PrunePlan(residual_width=32)
    pruned = sliced(tiny_model(family), 32, calibration_ids(), tmp_path / "rotations")
    save_model_folder(tmp_path / "out", pruned, None, plan=plan, record={})
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    ids, mask = left_padded_batch(128, reloaded.config.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, attention_mask=mask).logits, pruned(ids, attention_mask=mask).logits,
                                   rtol=0, atol=1e-5)
        prefill = reloaded(ids[:1, :-1], use_cache=True)
        step = reloaded(ids[:1, -1:], cache=prefill.cache, use_cache=True).logits[:, -1]
        torch.testing.assert_close(step, reloaded(ids[:1]).logits[:, -1], rtol=0, atol=1e-5)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(reloaded.generate(ids, use_cache=True, **kwargs), reloaded.generate(ids, use_cache=False, **kwargs))
    assert reloaded.model.layers[0].attn_shortcut_Q.shape == (32, 32)
    assert reloaded.lm_head.weight.shape[1] == 64 and not reloaded.config.tie_word_embeddings


@pytest.fixture(scope="module")
def embedded_run(embedded_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slicegpt")
    return hubprune.prune("default", "slicegpt", sparsity=0.25, output=folder / "out", seq_len=256, ppl=["default"],
                          max_windows=4, options={"calib_samples": 16, "calib_data": "default"}, loaded=embedded_model)


def test_embedded_model_at_25_percent_reloads_with_the_in_memory_logits(embedded_run):
    assert_reloads_like(embedded_run.output, embedded_run.model)


def test_embedded_model_perplexity_is_finite_and_worse_than_dense(embedded_run):
    ppl = embedded_run.record["evaluation"]["perplexity"]["default"]
    assert math.isfinite(ppl["pruned"]["perplexity"]) and ppl["pruned"]["perplexity"] > ppl["dense"]["perplexity"]


def test_both_fractions_are_reported_in_the_record_config_and_card(embedded_run):
    record = embedded_run.record
    s = record["method_report"]["slicing"]
    assert (s["hidden_size"], s["residual_width"], s["fraction"]) == (576, 432, 0.25)
    # The true fraction, counted on the model that was built, is what the method predicted and far less.
    assert record["sparsity"]["achieved"] == pytest.approx(s["predicted_sparsity"], abs=1e-9)
    assert 0.05 < record["sparsity"]["achieved"] < 0.2
    assert record["sparsity"]["requested"] == 0.25 and "hidden width" in record["sparsity"]["requested_means"]
    assert embedded_run.model.config.hubprune["sparsity_achieved"] == pytest.approx(record["sparsity"]["achieved"], abs=1e-6)
    card = write_card(embedded_run.output, repo_id="me/smollm2-slicegpt25").read_text()
    assert "sliced from 576 to\n432 channels (a slicing fraction of 25.00 %)" in card
    assert f"**{100 * record['sparsity']['achieved']:.2f} %** removed" in card
    assert "no longer tied" in card


def test_streamed_run_writes_the_same_weights_as_in_memory(tmp_path):
    source = calibratable_model(tmp_path / "src", layers=3)
    run = dict(sparsity=0.25, options={"calib_samples": 3, "calib_data": "default"}, seq_len=64, device="cpu",
               ppl=["default"], max_windows=2)
    memory = hubprune.prune(str(source), "slicegpt", output=tmp_path / "memory", **run)
    streamed = hubprune.prune(str(source), "slicegpt", output=tmp_path / "streamed", offload=True, **run)
    a, b = weights(tmp_path / "memory"), weights(tmp_path / "streamed")
    assert a.keys() == b.keys() and "model.norm.weight" not in a and "model.layers.0.mlp_shortcut_Q" in a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    ppl = [r.record["evaluation"]["perplexity"]["default"]["pruned"]["perplexity"] for r in (memory, streamed)]
    assert ppl[0] == pytest.approx(ppl[1], rel=1e-5)  # the streamed evaluation runs the shortcuts too


def test_refuses_what_it_cannot_slice(tmp_path):
    with pytest.raises(InvalidOptionError, match="lower --sparsity"):
        slicing(tiny_model("llama"), 0.95)  # 64 wide: fewer than 8 channels left
    source = calibratable_model(tmp_path / "opt", layers=2, config_class=OPTConfig)
    with pytest.raises(UnsupportedArchitectureError, match="RMSNorm"):
        hubprune.prune(str(source), "slicegpt", sparsity=0.25, output=tmp_path / "out", device="cpu")
    plan = tmp_path / "plan.json"
    plan.write_text('{"residual_width": 32}')
    with pytest.raises(InvalidOptionError, match="use --method slicegpt"):
        hubprune.prune(str(source), "manual", options={"plan": str(plan)}, output=tmp_path / "out", device="cpu")
