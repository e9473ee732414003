"""A Hugging Face tokenizer written into a GGUF file the way llama.cpp reads it.

**Byte-level BPE** tokenizers (`tokenizer.json` with a BPE model, no byte fallback, a ByteLevel decoder:
GPT-2, SmolLM, Llama 3.x, Qwen2) are written as llama.cpp's `gpt2` model: the token strings in id order
(ids the tokenizer lacks below the config's vocabulary size padded as unused), their types (normal,
control for special added tokens, user-defined for the others), the merges, the special token ids, the
chat template and `tokenizer.ggml.pre`, the name of the pre-tokenizer llama.cpp reimplements. llama.cpp's
own converter finds that name by hashing the tokenization of a reference text; here it is read from the
pre-tokenizer itself, and only the four forms whose llama.cpp counterpart the tests check are accepted
(the same tokens from llama.cpp and transformers on real text, `make test-serve`):

    ByteLevel (GPT-2's regex)                        -> gpt-2
    Digits (one by one), ByteLevel (GPT-2's regex)   -> smollm
    Split (Llama 3's regex), ByteLevel (no regex)    -> llama-bpe
    Split (Qwen2's regex), ByteLevel (no regex)      -> qwen2

**SentencePiece-style BPE** tokenizers (a BPE model with byte fallback, spaces as "▁": Llama 2, Mistral,
Phi-3) are written as llama.cpp's `llama` model. llama.cpp merges the adjacent pair whose result has
the highest score, where transformers applies the merge of lowest rank, so each token's score is minus
the rank of the first merge that makes it (the order SentencePiece's own scores give); `<0xNN>` tokens are
byte tokens, and `add_space_prefix` says whether a "▁" is put before the text (a Prepend normalizer or a
Metaspace pre-tokenizer that prepends).

Anything else is refused in one line rather than written with a tokenizer that would split text
differently.
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


def space_prefix(tokenizer: dict) -> bool | None:
    """For a SentencePiece-style tokenizer: whether it puts "▁" before the text (None: not a form whose
    llama.cpp counterpart is checked: the Prepend + Replace normalizer, or a Metaspace pre-tokenizer)."""
    normalizer, pre = tokenizer.get("normalizer") or {}, tokenizer.get("pre_tokenizer") or {}
    steps = normalizer["normalizers"] if normalizer.get("type") == "Sequence" else ([normalizer] if normalizer else [])
    kinds = [step.get("type") for step in steps]
    if not pre and kinds in (["Prepend", "Replace"], ["Replace"]) and steps[-1].get("content") == "\u2581" and \
            (steps[-1].get("pattern") or {}).get("String") == " ":
        return kinds[0] == "Prepend" and steps[0].get("prepend") == "\u2581"
    if not normalizer and pre.get("type") == "Metaspace" and pre.get("replacement") == "\u2581":
        if pre.get("split", True) and any("\u2581" in token[1:] for token in tokenizer["model"]["vocab"]):
            return None  # transformers would split at spaces where llama.cpp may merge across them
        return pre.get("prepend_scheme", "always") in ("first", "always")
    return None


def tokenizer_kind(tokenizer: dict) -> str:
    """The kind of a tokenizer.json llama.cpp reads the same way ("bpe" or "spm"), or a one-line refusal."""
    model = tokenizer.get("model") or {}
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        if space_prefix(tokenizer) is None:
            raise ExportError("this SentencePiece-style tokenizer's normalizer or pre-tokenizer is not one whose "
                              f"llama.cpp counterpart hubprune checks; {OTHER_FORMATS}")
        return "spm"
    if model.get("type") != "BPE" or (tokenizer.get("decoder") or {}).get("type") != "ByteLevel":
        raise ExportError(f"the gguf export converts BPE tokenizers (byte-level or SentencePiece-style), not this "
                          f"{model.get('type')} one; {OTHER_FORMATS}")
    if pre_tokenizer_name(tokenizer) is None:
        raise ExportError("this tokenizer's pre-tokenizer is not one whose llama.cpp counterpart hubprune checks ("
                          f"{', '.join(PRE_TOKENIZERS)}), so llama.cpp could split text differently; {OTHER_FORMATS}")
    return "bpe"


def read_tokenizer(folder: Path) -> dict:
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ExportError(f"{folder} has no tokenizer.json, which the gguf export converts; {OTHER_FORMATS}")
    return json.loads(file.read_text(encoding="utf-8"))


def add_hf_tokenizer(writer, folder: Path, vocab_size: int) -> None:
    """Write the tokenizer of the model folder `folder` into `writer` (a gguf.GGUFWriter)."""
    import gguf

    tokenizer = read_tokenizer(folder)
    kind = tokenizer_kind(tokenizer)
    model = tokenizer["model"]
    added = {t["id"]: t for t in tokenizer.get("added_tokens") or []}
    by_id = {i: text for text, i in model["vocab"].items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        text = by_id.get(i)
        tokens.append(f"[PAD{i}]" if text is None else text)
        if text is None:
            types.append(gguf.TokenType.UNUSED)
        elif kind == "spm" and _is_byte_token(text):
            types.append(gguf.TokenType.BYTE)
        elif kind == "spm" and text == model.get("unk_token"):
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    if kind == "bpe":
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    else:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(_merge_scores(tokens, model.get("merges") or []))
        writer.add_add_space_prefix(space_prefix(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=kind == "bpe", n_vocab=size)
    special.add_to_gguf(writer)
    template = folder / "chat_template.jinja"  # transformers 5 saves the template beside tokenizer_config.json
    if special.chat_template is None and template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def _is_byte_token(text: str) -> bool:
    return len(text) == 6 and text.startswith("<0x") and text.endswith(">")


def _merge_scores(tokens: list[str], merges: list) -> list[float]:
    """Minus the rank of the first merge that makes each token (0 for tokens no merge makes)."""
    rank_of: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank_of.setdefault(left + right, rank)
    return [-float(rank_of[t]) if t in rank_of else 0.0 for t in tokens]
