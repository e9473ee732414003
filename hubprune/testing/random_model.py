"""A model folder that needs no download and no installed asset: random weights of a given shape, a real
byte-level BPE tokenizer trained on real text (the Python standard library's own sources, present
wherever Python is), and that text as a calibration corpus. Timing does not depend on the weights, so
this is what `bench/gpu_check.py` prunes on a GPU machine that can reach nothing."""
from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_text(max_chars: int = 4_000_000) -> str:
    """Text of the standard library's .py files, in a fixed order (the same on every machine with the
    same Python)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for file in sorted(root.glob("*.py")):
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


def random_model(folder: str | Path, config, *, vocab_size: int = 8192, dtype=None) -> Path:
    """Save a random-weight model of `config` (its vocab_size is set to the tokenizer's) with a BPE
    tokenizer trained on `stdlib_text`, and that text as `corpus.txt`; returns the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = stdlib_text()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config.vocab_size = len(fast)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 0, 1, 2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.bfloat16)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    (folder / "corpus.txt").write_text(text)
    return folder
