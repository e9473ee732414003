"""A Hugging Face tokenizer written into a GGUF file the way llama.cpp reads it.

Byte-level BPE tokenizers (`tokenizer.json` with a BPE model, no byte fallback, a ByteLevel decoder:
GPT-2, SmolLM, Llama 3.x, Qwen2) are written as llama.cpp's `gpt2` model: the token strings in id order
(ids the tokenizer lacks below the config's vocab size padded as unused), their types (normal, control
for special added tokens, user-defined for the others), the merges, the special token ids, the chat
template and `tokenizer.ggml.pre`, the name of the pre-tokenizer llama.cpp reimplements. llama.cpp's own
converter finds that name by hashing the tokenization of a reference text; here it is read from the
pre-tokenizer itself, and only the four forms whose llama.cpp counterpart is checked by the tests are
accepted (the same tokens from llama.cpp and transformers on real text, `make test-serve`):

    ByteLevel (GPT-2's regex)                        -> gpt-2
    Digits (one by one), ByteLevel (GPT-2's regex)   -> smollm
    Split (Llama 3's regex), ByteLevel (no regex)    -> llama-bpe
    Split (Qwen2's regex), ByteLevel (no regex)      -> qwen2

Anything else (SentencePiece tokenizers such as Llama 2's and Mistral's among them) is refused in one
line rather than written with a pre-tokenizer that would split text differently.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ExportError
from .blocks import OTHER_FORMATS

# The pre-tokenizer regexes as they appear in tokenizer.json files.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe", "qwen2")


def _parts(pre_tokenizer: dict | None) -> list[dict]:
    if not pre_tokenizer:
        return []
    return pre_tokenizer["pretokenizers"] if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]


def pre_tokenizer_name(tokenizer: dict) -> str | None:
    """llama.cpp's name for this tokenizer.json's pre-tokenizer (None: not one of the four known forms)."""
    parts = _parts(tokenizer.get("pre_tokenizer"))
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True) and \
            parts[0].get("behavior") == "Isolated" and not parts[0].get("invert"):
        regex = (parts[0].get("pattern") or {}).get("Regex")
        return {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}.get(regex)
    return None


def check_tokenizer(tokenizer: dict) -> None:
    """Refuse, in one line, a tokenizer.json that is not a byte-level BPE llama.cpp reads the same way."""
    model, decoder = tokenizer.get("model") or {}, tokenizer.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise ExportError("the gguf export converts byte-level BPE tokenizers (GPT-2, SmolLM, Llama 3, Qwen2); this "
                          f"one is {model.get('type')} with a {decoder.get('type')} decoder (SentencePiece-style, as "
                          f"Llama 2's and Mistral's), not converted yet; {OTHER_FORMATS}")
    if pre_tokenizer_name(tokenizer) is None:
        raise ExportError("this tokenizer's pre-tokenizer is not one whose llama.cpp counterpart hubprune checks ("
                          f"{', '.join(PRE_TOKENIZERS)}), so llama.cpp could split text differently; {OTHER_FORMATS}")


def read_tokenizer(folder: Path) -> dict:
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ExportError(f"{folder} has no tokenizer.json, which the gguf export converts; {OTHER_FORMATS}")
    return json.loads(file.read_text(encoding="utf-8"))


def add_hf_tokenizer(writer, folder: Path, vocab_size: int) -> None:
    """Write the tokenizer of the model folder `folder` into `writer` (a gguf.GGUFWriter)."""
    import gguf

    tokenizer = read_tokenizer(folder)
    check_tokenizer(tokenizer)
    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    added = {t["id"]: t for t in tokenizer.get("added_tokens") or []}
    by_id = {i: text for text, i in vocab.items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=size)
    special.add_to_gguf(writer)
    template = folder / "chat_template.jinja"  # transformers 5 saves the template beside tokenizer_config.json
    if special.chat_template is None and template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))
