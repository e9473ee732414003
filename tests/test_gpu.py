"""What only a CUDA GPU can show, run by `make gpu-check` (marked `gpu`, outside the default run): every
method end to end in bf16 on the GPU, on a TinyLlama-shaped random model with a real tokenizer and real
text (`hubprune.testing.random_model`: the lent machines reach no Hub and carry no embedded model), and
the attention-kernel claim behind `--value-multiple` (the memory-efficient SDPA kernel takes bf16 value
widths divisible by 8 only)."""
from __future__ import annotations

import math

import pytest
import torch

import hubprune
from hubprune.methods import methods

pytestmark = pytest.mark.gpu

OPTIONS = {
    "2ssp": {"calib_samples": 4}, "fasp": {"calib_samples": 4}, "shortgpt": {"calib_samples": 4},
    "window": {"calib_samples": 4}, "blockpruner": {"calib_samples": 1}, "slicegpt": {"calib_samples": 4},
    "evopress": {"evopress_generations": 2, "evopress_tokens": 4096, "evopress_seq_len": 256,
                 "evopress_offspring": 4, "evopress_initial": 4, "evopress_selection_tokens": "256,2048"},
}


@pytest.fixture(autouse=True)
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("these checks need a CUDA GPU (run them with `make gpu-check` on a GPU machine)")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from transformers import LlamaConfig

    from hubprune.testing.random_model import random_model

    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=4)  # TinyLlama-1.1B's shape
    return random_model(tmp_path_factory.mktemp("gpu") / "tinyllama-shaped", config)


@pytest.mark.parametrize("method", sorted(set(methods()) - {"manual"}))
def test_every_method_prunes_on_the_gpu_in_bf16(method, source, tmp_path):
    corpus = str(source / "corpus.txt")
    result = hubprune.prune(str(source), method, sparsity=0.25, output=tmp_path / "out", device="cuda",
                            dtype="bfloat16", seq_len=256, ppl=[corpus], max_windows=8,
                            options={"calib_data": corpus, **OPTIONS[method]})
    record = result.record
    assert record["environment"]["device"].startswith("cuda") and record["source"]["dtype"] == "bfloat16"
    (ppl,) = record["evaluation"]["perplexity"].values()
    assert math.isfinite(ppl["pruned"]["perplexity"]) and math.isfinite(ppl["dense"]["perplexity"])
    reloaded = hubprune.load_model(str(tmp_path / "out"), device="cuda", dtype="bfloat16")
    ids = torch.arange(100, 164, device="cuda")[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(ids).logits.float(), result.model(ids).logits.float(),
                                   rtol=0, atol=0.05)


@pytest.mark.parametrize(("value_width", "efficient"), [(88, True), (90, False), (128, True)])
def test_memory_efficient_attention_needs_value_widths_divisible_by_8(value_width, efficient):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 32, 512, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 32, 512, value_width, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        if efficient:
            torch.nn.functional.scaled_dot_product_attention(q, q, v, is_causal=True)
        else:
            with pytest.raises(RuntimeError):
                torch.nn.functional.scaled_dot_product_attention(q, q, v, is_causal=True)


@pytest.mark.parametrize("params", ["lora", "all"])
def test_healing_on_the_gpu_trains_under_bf16_autocast_with_fp32_masters(params, source, tmp_path):
    corpus = str(source / "corpus.txt")
    text = (source / "corpus.txt").read_text()
    (tmp_path / "heal.txt").write_text(text[len(text) // 2:])  # not the start, which the perplexity reads
    result = hubprune.prune(str(source), "2ssp", sparsity=0.25, output=tmp_path / "out", device="cuda",
                            dtype="bfloat16", seq_len=256, ppl=[corpus], max_windows=8,
                            options={"calib_data": corpus, "calib_samples": 4},
                            heal={"method": "kd", "data": str(tmp_path / "heal.txt"), "steps": 8, "batch": 2, "params": params,
                                  "checkpointing": True})
    heal = result.record["heal"]
    assert heal["precision"].startswith("bf16 autocast") and heal["peak_memory_bytes"]["device"] > 0
    assert all(math.isfinite(x) for x in heal["loss"]["per_step"])
    assert next(result.model.parameters()).dtype == torch.bfloat16  # back in the output dtype
    (ppl,) = result.record["evaluation"]["perplexity"].values()
    assert math.isfinite(ppl["healed"]["perplexity"])
