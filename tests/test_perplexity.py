"""Perplexity: the 2SSP windowing protocol and fp32 loss, checked against an independent computation."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model

from hubprune.data import Corpus, load_corpus, token_windows
from hubprune.errors import DatasetUnavailableError
from hubprune.evaluation import perplexity


class CharTokenizer:
    """A real (if trivial) tokenizer: one id per byte, so windows are easy to predict by hand."""

    def __call__(self, text, add_special_tokens=True, return_tensors=None):
        ids = ([1] if add_special_tokens else []) + [b % 128 for b in text.encode()]
        return type("Enc", (), {"input_ids": torch.tensor([ids])})


def test_windows_are_non_overlapping_without_bos_and_drop_the_remainder():
    corpus = Corpus("t", ["abcdefgh", "ijk"], {})
    windows = token_windows(CharTokenizer(), corpus, seq_len=4)
    joined = [b % 128 for b in "abcdefgh\n\nijk".encode()]  # documents joined with a blank line
    assert windows.tolist() == [joined[0:4], joined[4:8], joined[8:12]]  # 13 tokens -> 3 windows, 1 dropped
    assert token_windows(CharTokenizer(), corpus, seq_len=4, max_windows=2).shape == (2, 4)


def test_too_short_corpus_is_an_error_not_a_short_result():
    with pytest.raises(DatasetUnavailableError, match="too short for 5 window"):
        token_windows(CharTokenizer(), Corpus("t", ["abc"], {}), seq_len=4, min_windows=5)


def test_perplexity_equals_independent_fp64_computation():
    model = tiny_model("llama")
    windows = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    result = perplexity(model, windows, progress=False)
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logp = torch.log_softmax(model(w[None]).logits[0].double(), dim=-1)
            total -= sum(logp[t, w[t + 1]].item() for t in range(15))
            count += 15
    assert result.tokens == count == 45 and result.windows == 3
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-6)


def test_unknown_corpus_and_bad_file_say_what_to_use(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="use default, wikitext2, c4, fineweb-edu"):
        load_corpus("wikitext3")
    (tmp_path / "x.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(DatasetUnavailableError, match="'text' field"):
        load_corpus(str(tmp_path / "x.jsonl"))


def test_local_text_file_is_a_corpus_with_its_hash(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    corpus = load_corpus(str(tmp_path / "a.txt"))
    assert corpus.texts == ["hello world"] and len(corpus.provenance["sha256"]) == 64


def test_default_corpus_parts_are_disjoint_real_prose():
    calibration = load_corpus("default", "calibration")
    evaluation = load_corpus("default", "evaluation")
    assert not set(calibration.texts) & set(evaluation.texts)
    assert len(calibration.texts) + len(evaluation.texts) == 2938
    assert sum(len(t.split()) for t in evaluation.texts) > 50_000
