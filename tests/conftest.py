"""Shared fixtures: tiny random models of every supported family (built here, no download) and the
embedded real model (SmolLM2-135M, converted once into the hubprune cache)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# Before anything imports huggingface_hub: uploads to the local test Hub go through the LFS protocol
# (Xet needs a storage service the local server does not emulate). Tests never talk to the real Hub.
os.environ["HF_HUB_DISABLE_XET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, OPTConfig  # noqa: E402

from hubprune.families import FAMILIES as REGISTERED_FAMILIES  # noqa: E402

# Small but structurally faithful, one per registered family (Family.tiny_config): GQA everywhere, Qwen2
# q/k/v biases and mixed sliding/full layers, Mistral and Phi-3 sliding window, Phi-3 fused projections,
# tied and untied embeddings, OPT's learned positions, LayerNorms, biases and ReLU MLP.
TINY_CONFIGS = {name: family.tiny_config for name, family in REGISTERED_FAMILIES.items()}


CONFIGS = Path(__file__).parent / "configs"
# Published config.json files of real models (tests/configs/README.md says where each comes from).
REAL_CONFIGS = {"llama3": "llama-3.1-8b.json", "qwen3": "qwen3-0.6b.json", "gemma3_text": "gemma-3-270m.json",
                "olmo2": "olmo-2-0425-1b.json", "smollm3": "smollm3-3b.json"}


def shaped_config(file: str, layers: int = 6):
    """A real model's published config shrunk to a tiny model: width 64, 8 heads of 16 (the KV heads in the
    published ratio), FFN 192, its first `layers` layers (with their attention types and RoPE pattern), a
    window of 8 tokens and a vocabulary of 128; every other setting (norms, RoPE type and scaling, tying,
    attention scalars) as published."""
    from transformers import AutoConfig

    data = json.loads((CONFIGS / file).read_text())
    kv_ratio = data["num_attention_heads"] // data.get("num_key_value_heads", data["num_attention_heads"])
    data.update(hidden_size=64, num_attention_heads=8, num_key_value_heads=max(1, 8 // kv_ratio), head_dim=16,
                intermediate_size=192, num_hidden_layers=layers, vocab_size=128, pad_token_id=0, bos_token_id=1,
                eos_token_id=2)
    for key in ("layer_types", "no_rope_layers"):
        if key in data:
            data[key] = data[key][:layers]
    if data.get("max_window_layers"):
        data["max_window_layers"] = min(data["max_window_layers"], layers)
    if data.get("sliding_window"):
        data["sliding_window"] = 8
    for key in ("architectures", "torch_dtype", "transformers_version"):
        data.pop(key, None)
    return AutoConfig.for_model(**data)


# Llama 3.x is not a family of its own: the Llama family with `llama3` RoPE scaling (3.1; 3.2 also ties the
# embeddings, as the tiny Llama does).
TINY_CONFIGS["llama3"] = lambda: shaped_config(REAL_CONFIGS["llama3"], layers=5)  # the format matrix plans 5 blocks
FAMILIES = sorted(TINY_CONFIGS)  # every tiny model the format matrix runs
# The method matrix (`method_outputs`) prunes the real-config-shaped model where the family has one.
MATRIX_CONFIGS = {name: (lambda file=REAL_CONFIGS[name]: shaped_config(file)) if name in REAL_CONFIGS else make
                  for name, make in TINY_CONFIGS.items()}


def model_type(name: str) -> str:
    """The model_type of a tiny model of `TINY_CONFIGS`."""
    return TINY_CONFIGS[name]().model_type


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[family](), attn_implementation="sdpa").eval()
    with torch.no_grad():  # biases and norm weights start as constants: make them matter
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
            elif "norm" in name:
                param.add_(torch.randn_like(param), alpha=0.2)
    return model


SESSION_FOLDER = "session-"  # the prefix of a session fixture's folder


@pytest.fixture(scope="module", autouse=True)
def _module_folders_removed(tmp_path_factory):
    """The folders a test module's fixtures wrote (pruned real models, a local Hub) go when the module
    ends, so that a whole run needs a few GB of disk, not the sum of every module's. Session fixtures'
    folders (named `session-*`) stay: they serve the whole session."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    for path in set(base.iterdir()) - before:
        if not path.name.startswith(SESSION_FOLDER):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=FAMILIES)
def family_model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct, fp32, CPU (loaded once per test session)."""
    from hubprune.loading import load_model

    return load_model("default", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model):
    return embedded_model.tokenizer


def _pre_tokenizer(form: str):
    """The pre-tokenizer of each form the gguf export maps to llama.cpp (serving/gguf_vocab.py), and one
    it does not ("whitespace")."""
    from tokenizers import Regex, pre_tokenizers

    from hubprune.serving.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    split = {"llama-bpe": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}
    if form in split:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split[form]), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return {"gpt-2": byte_level, "whitespace": pre_tokenizers.WhitespaceSplit(),
            "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])}[form]


def tiny_tokenizer(vocab_size: int = 300, form: str = "gpt-2"):
    """A real BPE tokenizer trained here on the embedded corpus, with a vocabulary small enough for tiny
    models (so they can be calibrated on text); give the model `len(tokenizer)`. `form`: its
    pre-tokenizer (byte-level: GPT-2's by default, see `_pre_tokenizer`), or a SentencePiece-style
    tokenizer laid out as Llama 2's (`spm-metaspace`: a Metaspace pre-tokenizer, `spm-prepend`: the older
    Prepend + Replace normalizer; byte fallback to `<0xNN>` tokens in the vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hubprune import embedded

    texts = embedded.default_corpus("calibration")[:200]
    if form.startswith("spm"):
        return _sentencepiece_style(vocab_size, form, texts)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _pre_tokenizer(form)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def _sentencepiece_style(vocab_size: int, form: str, texts: list[str]):
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens])
    tokenizer.train_from_iterator(texts, trainer)
    data = json.loads(tokenizer.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in byte_tokens]  # plain vocabulary
    tokenizer = Tokenizer.from_str(json.dumps(data))
    if form == "spm-prepend":  # no pre-tokenizer: the normalizer puts the "▁"s in
        tokenizer.pre_tokenizer = None
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def calibratable_model(folder, *, layers=6, hidden=64, ffn=128, shard="50KB", config_class=LlamaConfig,
                       tokenizer_form="gpt-2", family: str | None = None):
    """A random model (Llama by default) with a real (tiny) tokenizer, saved in many small shards. With
    `family` (a name of MATRIX_CONFIGS), that tiny model's config with the tokenizer's vocabulary: its own
    shape and settings (layer types, norms, RoPE) are kept."""
    tokenizer = tiny_tokenizer(form=tokenizer_form)
    shape = dict(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                 pad_token_id=tokenizer.pad_token_id, bos_token_id=1, eos_token_id=2)
    if family is not None:
        config = MATRIX_CONFIGS[family]()
        config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    elif config_class is OPTConfig:  # multi-head only; its own name for the FFN width
        config = OPTConfig(**shape, ffn_dim=ffn, word_embed_proj_dim=hidden, max_position_embeddings=256)
    else:
        config = config_class(**shape, intermediate_size=ffn, num_key_value_heads=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, max_shard_size=shard)
    tokenizer.save_pretrained(folder)
    return folder


CALIBRATION = {"calib_data": "default"}
METHOD_OPTIONS = {  # the smallest settings that exercise each method on a tiny model
    "2ssp": {**CALIBRATION, "calib_samples": 2, "stage2_samples": 1, "alpha": 1.0},  # OPT: attention-heavy
    "fasp": {**CALIBRATION, "calib_samples": 2},
    "shortgpt": {**CALIBRATION, "calib_samples": 2},
    "window": {**CALIBRATION, "calib_samples": 2},
    "blockpruner": {**CALIBRATION, "calib_samples": 1},
    "evopress": {**CALIBRATION, "evopress_generations": 1, "evopress_tokens": 256, "evopress_seq_len": 32,
                 "evopress_offspring": 2, "evopress_initial": 2, "evopress_selection_tokens": "32,256"},
    "slicegpt": {**CALIBRATION, "calib_samples": 2},
    "manual": {},
}
MANUAL_PLAN = {"skip_attention": [1], "skip_mlp": [2]}


def method_options(method: str, folder) -> dict:
    """METHOD_OPTIONS[method], with the manual plan file (written into `folder`) for `manual`."""
    if method != "manual":
        return dict(METHOD_OPTIONS[method])
    plan = Path(folder) / "plan.json"
    plan.write_text(json.dumps(MANUAL_PLAN))
    return {"plan": str(plan)}


@pytest.fixture(scope="session")
def method_outputs(tmp_path_factory):
    """`method_outputs(name)`: every method run once at 25 % on the tiny model `name` of MATRIX_CONFIGS (with a
    real tokenizer), shared by the tests that look at the results: (source folder, {method: PruneResult},
    {method: the UnsupportedArchitectureError that refused it})."""
    import hubprune
    from hubprune.errors import UnsupportedArchitectureError
    from hubprune.methods import methods

    made = {}

    def run(name: str):
        if name not in made:
            folder = tmp_path_factory.mktemp(f"{SESSION_FOLDER}methods-{name}")
            source = calibratable_model(folder / "src", family=name)
            results, refused = {}, {}
            for method in sorted(methods()):
                try:
                    results[method] = hubprune.prune(
                        str(source), method, output=folder / method, sparsity=None if method == "manual" else 0.25,
                        options=method_options(method, folder), device="cpu", seq_len=32)
                except UnsupportedArchitectureError as exc:
                    refused[method] = exc
            made[name] = source, results, refused
        return made[name]

    return run


TWOSSP_SPARSITIES = (0.25, 0.5)
TWOSSP_SEQ_LEN = 64  # short windows: the whole job does hundreds of block forwards


@pytest.fixture(scope="session")
def twossp_runs(embedded_model, tmp_path_factory):
    """The embedded model pruned by 2SSP at each of TWOSSP_SPARSITIES (4 calibration windows), with dense and
    pruned perplexity on 8 held-out windows: {sparsity: PruneResult}, shared by the 2SSP and healing tests."""
    import hubprune

    folder = tmp_path_factory.mktemp(f"{SESSION_FOLDER}2ssp")
    return {s: hubprune.prune("default", "2ssp", sparsity=s, options={"calib_samples": 4}, output=folder / str(s),
                              ppl=["default"], seq_len=TWOSSP_SEQ_LEN, max_windows=8, loaded=embedded_model)
            for s in TWOSSP_SPARSITIES}


# Whole jobs on the embedded model that several modules check, each run once per session: the keyword
# arguments of `hubprune.prune` but the output. test_distributed runs the same jobs over two processes.
FASP_SEQ_LEN, FASP_WINDOWS = 256, 16  # 4,096 tokens: more than the widest refitted layer (1,536), so no overfit
# Small enough for CPU: 8 sequences of 128 tokens; the last selection step scores all of them.
EVOPRESS_SMALL = {"evopress_generations": 2, "evopress_tokens": 1024, "evopress_seq_len": 128, "evopress_offspring": 4,
                  "evopress_initial": 4, "evopress_selection_tokens": "128,1024"}
SHARED_JOBS = {
    "fasp": dict(model="default", method="fasp", sparsity=0.3, seq_len=FASP_SEQ_LEN, ppl=["default"], max_windows=4,
                 options={"calib_samples": FASP_WINDOWS, "calib_data": "default"}),
    "evopress": dict(model="default", method="evopress", sparsity=0.1, seq_len=128, ppl=["default"], max_windows=2,
                     options=EVOPRESS_SMALL),
}


def _shared_run(name: str, embedded_model, tmp_path_factory):
    import hubprune

    return hubprune.prune(**SHARED_JOBS[name], output=tmp_path_factory.mktemp(f"{SESSION_FOLDER}{name}") / "out",
                          loaded=embedded_model)


@pytest.fixture(scope="session")
def fasp_run(embedded_model, tmp_path_factory):
    """SHARED_JOBS["fasp"], with least-squares restoration."""
    return _shared_run("fasp", embedded_model, tmp_path_factory)


@pytest.fixture(scope="session")
def evopress_run(embedded_model, tmp_path_factory):
    """SHARED_JOBS["evopress"]: two generations of a small search."""
    return _shared_run("evopress", embedded_model, tmp_path_factory)


def left_padded_batch(vocab: int, pad_id: int, seed: int = 1):
    """Two prompts of different lengths, left-padded (the case that exposes KV-cache position bugs)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :4] = pad_id
    mask[1, :4] = 0
    return ids, mask


def assert_reloads_like(folder, model):
    """The output folder reloads (remote code) with `model`'s logits and generates the same with and
    without the KV cache."""
    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.arange(100, 164)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    prompt = torch.arange(200, 210)[None]
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(reloaded.generate(prompt, use_cache=True, **kwargs),
                       reloaded.generate(prompt, use_cache=False, **kwargs))


__all__ = ["assert_reloads_like", "FAMILIES", "MATRIX_CONFIGS", "REAL_CONFIGS", "shaped_config", "METHOD_OPTIONS", "method_options", "model_type", "TINY_CONFIGS", "AutoTokenizer", "left_padded_batch", "tiny_model", "tiny_tokenizer"]
