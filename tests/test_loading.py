"""Finding and loading models: local folders, unsupported families, the Hub's failure modes (each
translated into an error that says what to do), and the pre-flight memory check."""
from __future__ import annotations

import httpx2 as httpx
import pytest
import torch
from conftest import tiny_model
from huggingface_hub import errors as hub_errors
from transformers import GPT2Config, GPT2LMHeadModel

from hubprune.errors import (
    GatedRepoAccessError,
    InsufficientResourcesError,
    InvalidOptionError,
    ModelNotFoundError,
    OfflineError,
    UnsupportedArchitectureError,
)
from hubprune.loading import _hub_error, load_model, preflight, resolve_device, resolve_model


def test_local_folder_loads_with_requested_dtype(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu", dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16 and loaded.family.model_type == "qwen2"
    assert loaded.source.repo_id is None and loaded.source.weight_bytes > 0


def test_auto_dtype_keeps_the_checkpoint_dtype(tmp_path):
    tiny_model("llama").to(torch.bfloat16).save_pretrained(tmp_path)
    assert load_model(str(tmp_path), device="cpu").model.dtype == torch.bfloat16


def test_unsupported_family_is_refused_before_loading_weights(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path)
    supported = "gemma3_text, llama, mistral, olmo2, olmo3, opt, phi3, qwen2, qwen3, smollm3"
    with pytest.raises(UnsupportedArchitectureError, match=f"'gpt2' is not supported; hubprune supports: {supported}"):
        load_model(str(tmp_path), device="cpu")


def test_missing_local_paths_are_reported(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        resolve_model(str(tmp_path))


def test_offline_without_cache_says_how_to_proceed(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="not in the local cache; connect once .* or pass a local model folder"):
        resolve_model("someone/some-model")


def hub_response(status: int):
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/a/b"))


def test_hub_errors_become_actionable_messages():
    gated = hub_errors.GatedRepoError("403 gated", response=hub_response(403))
    assert isinstance(_hub_error(gated, "meta-llama/Llama-2-7b-hf", None), GatedRepoAccessError)
    assert "accept its license at https://huggingface.co/meta-llama/Llama-2-7b-hf" in str(_hub_error(gated, "meta-llama/Llama-2-7b-hf", None))
    revision = _hub_error(hub_errors.RevisionNotFoundError("404", response=hub_response(404)), "a/b", "v9")
    assert isinstance(revision, ModelNotFoundError) and "no revision 'v9'" in str(revision)
    missing = _hub_error(hub_errors.RepositoryNotFoundError("404", response=hub_response(404)), "a/b", None)
    assert isinstance(missing, ModelNotFoundError) and "--token" in str(missing)
    with pytest.raises(RuntimeError):  # anything unknown is a bug: re-raised unchanged
        _hub_error(RuntimeError("boom"), "a/b", None)


def test_preflight_refuses_with_the_numbers_and_the_option_that_helps():
    config = tiny_model("llama").config
    check = preflight(config, torch.float32, torch.device("cpu"), output=None)
    assert check.needed["ram"] > check.model_bytes > 0
    check.available["ram"] = check.needed["ram"] - 1
    with pytest.raises(InsufficientResourcesError, match=r"needs about .* GiB .* free; use --offload, --dtype bfloat16"):
        check.check(output=None)


def test_device_must_exist():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(InvalidOptionError, match="choose cuda, cpu or auto"):
        resolve_device("tpu")


def test_a_gguf_file_is_a_model_reference():
    from hubprune.embedded import default_model_gguf
    from hubprune.loading import load_config

    source = resolve_model(str(default_model_gguf()))
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and source.weight_bytes > 50_000_000
    config = load_config(source)
    assert config.model_type == "llama" and config.num_hidden_layers == 30


def test_the_preflight_counts_each_methods_working_memory(monkeypatch):
    """Llama-3-70B-shaped, streamed: the model's share is a few GiB, the methods' own needs are not."""
    from transformers import LlamaConfig

    from hubprune import loading, memory
    from hubprune.errors import InsufficientResourcesError
    from hubprune.methods import get_method

    config = LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, vocab_size=128256)
    GiB = 2**30
    need = {name: get_method(name).working_memory(config, 2, 2048, 0.3, get_method(name).Options())
            for name in ("2ssp", "fasp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt")}
    need["manual"] = get_method("manual").working_memory(config, 2, 2048, None, None)
    assert need["manual"] == {}
    assert 15 * GiB < need["shortgpt"]["device"] == need["window"]["device"] < 20 * GiB  # 256 windows, two copies
    assert 20 * GiB < need["fasp"]["device"] < 35 * GiB  # fp64 Gram of the 28,672-wide FFN, thrice
    assert need["evopress"].get("host", need["evopress"].get("disk")) == 131072 * 128256 * 2  # the dense logits
    assert need["2ssp"]["device"] < need["shortgpt"]["device"]  # 32 windows, not 256
    monkeypatch.setattr(memory, "available_ram", lambda: 24 * GiB)
    streamed = loading.preflight(config, torch.bfloat16, torch.device("cpu"), None, offload=True)
    streamed.check(output=None)  # the model alone fits, block by block
    with pytest.raises(InsufficientResourcesError, match="the method's working memory"):
        loading.preflight(config, torch.bfloat16, torch.device("cpu"), None, offload=True,
                          working=need["fasp"]).check(output=None)
