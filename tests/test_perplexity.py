"""Perplexity: the 2SSP windowing protocol and fp32 loss, checked against an independent computation."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import FAMILIES, tiny_model

from hubprune.data import Corpus, load_corpus, token_windows
from hubprune.errors import DatasetUnavailableError
from hubprune.evaluation.perplexity import perplexity


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


@pytest.mark.parametrize("family", FAMILIES)
def test_block_by_block_perplexity_equals_the_whole_model_forward(family, tmp_path):
    """DecoderStack's embed / blocks / head (OPT: learned positions, LayerNorms, ReLU MLP) against the stock
    model's own forward, in memory and streamed from the shards."""
    from hubprune.loading import load_model
    from hubprune.sequential import DecoderStack, stack_perplexity

    tiny_model(family).save_pretrained(tmp_path, max_shard_size="20KB")
    windows = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = perplexity(tiny_model(family), windows, progress=False).perplexity
    for offload in (False, True):
        loaded = load_model(str(tmp_path), device="cpu", dtype="float32", offload=offload)
        result = stack_perplexity(DecoderStack(loaded), windows, progress=False)
        assert result.perplexity == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_block_by_block_consumers_see_the_whole_model_inputs(family, tmp_path):
    """Calibration hooks sit on the FFN's and the attention's output projections: block by block they must
    fire and see exactly the inputs of the stock forward (OPT's MLP has no module, so this is not free)."""
    from hubprune.families import get_family
    from hubprune.loading import LoadedModel, ModelSource
    from hubprune.sequential import DecoderStack

    model = tiny_model(family)
    adapter = get_family(model.config.model_type)
    ids = torch.randint(3, 128, (1, 12), generator=torch.Generator().manual_seed(2))

    def captured(run):
        seen = []
        layer = adapter.layers(model)[1]
        handles = [layer.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1)))
                   for name in (adapter.value_cols, adapter.ffn_cols[0])]
        with torch.no_grad():
            run()
        for handle in handles:
            handle.remove()
        return seen

    whole = captured(lambda: model(ids, use_cache=False))
    stack = DecoderStack(LoadedModel(model, None, adapter, ModelSource("tiny", tmp_path), torch.device("cpu"),
                                     torch.float32))

    def block_by_block():
        hidden = stack.embed(ids)
        for index in range(stack.num_layers):
            hidden = stack.run(adapter.layers(model)[index], index, hidden)

    by_block = captured(block_by_block)
    assert len(whole) == len(by_block) == 2
    for a, b in zip(whole, by_block):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
