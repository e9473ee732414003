"""EvoPress (docs/algorithms.md, "EvoPress"): the search's pieces as the reference defines them, the KL fitness
against an independent whole-model computation, and whole runs on the embedded real model that are
deterministic, never worse than their first parent, and resume after an interruption."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_JOBS, calibratable_model
from transformers import AutoModelForCausalLM

import hubprune
from hubprune import memory
from hubprune.errors import InvalidOptionError
from hubprune.families import get_family
from hubprune.loading import load_model
from hubprune.methods import evopress
from hubprune.methods.compute import kl_fitness
from hubprune.methods.evopress import generations_for, mutate, random_candidate
from hubprune.plan import PrunePlan
from hubprune.runs import MARKER
from hubprune.sequential import DecoderStack
from hubprune.surgery import apply_plan

@pytest.mark.parametrize("n, expected", [(32, [128, 160, 170]), (28, [98, 124, 130]), (40, [200, 250, 266])])
def test_generation_counts_match_the_spec_table(n, expected):
    from hubprune.methods.base import blocks_to_remove

    assert [generations_for(blocks_to_remove(s, n), n) for s in (0.25, 0.375, 0.5)] == expected


def test_mutation_keeps_both_counts_and_flips_at_most_three_modules():
    rng = random.Random(0)
    flips = set()
    for _ in range(500):
        parent = random_candidate(rng, 12, 4)
        child = mutate(rng, parent, 12)
        assert len(child[0]) == len(child[1]) == 4 and child[0] == tuple(sorted(child[0]))
        changed = len(set(parent[0]) - set(child[0])) + len(set(parent[1]) - set(child[1]))
        assert changed <= 3
        flips.add(changed)
    assert {1, 2, 3} <= flips  # a later flip may undo an earlier one, so 0 can occur too


def test_minibatch_has_exactly_the_tokens_from_distinct_sequences_the_last_cut():
    rng = random.Random(3)
    batch = kl_fitness.sample_minibatch(rng, sequences=8, seq_len=100, tokens=350)
    assert [take for _, take in batch] == [100, 100, 100, 50]
    assert len({index for index, _ in batch}) == 4


def _kl_by_whole_model(model, ids, dense_logits, candidate):
    """Independent of DecoderStack: the stock model with the sub-modules bypassed by surgery."""
    pruned = apply_plan(model, PrunePlan(skip_attention=list(candidate[0]), skip_mlp=list(candidate[1])))
    with torch.no_grad():
        log_q = F.log_softmax(pruned(ids).logits.double(), -1)
    log_p = F.log_softmax(dense_logits.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()


def test_kl_fitness_equals_a_whole_model_computation(tmp_path):
    source = calibratable_model(tmp_path / "src", layers=6)
    loaded = load_model(str(source), device="cpu", dtype="float32")
    stack = DecoderStack(loaded)
    ids = torch.randint(3, 200, (3, 40), generator=torch.Generator().manual_seed(0))
    dense = kl_fitness.DenseLogits(stack, ids, None, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(dense.logits, loaded.model(ids).logits, rtol=0, atol=1e-5)
    candidates = [((0, 3), (2, 5)), ((0, 3), (2, 4)), ((1, 5), (0, 1)), ((), ())]
    minibatch = [(2, 40), (0, 40), (1, 17)]  # the last sequence cut, as a minibatch's last one is
    fitness = kl_fitness.kl_fitness(stack, ids, dense, candidates, minibatch, batch=2)
    for candidate, value in zip(candidates, fitness):
        expected = sum(_kl_by_whole_model(loaded.model, ids[i:i + 1, :take], dense.logits[i:i + 1, :take],
                                          candidate) * take for i, take in minibatch) / 97
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert fitness[-1] == pytest.approx(0, abs=1e-7)
    # The dense logits go to the device once per minibatch row and chunk, whatever the number of candidates
    # (per candidate and row, a 128k vocabulary moved ~42 GB host -> device per generation).
    copies = dense.copies
    kl_fitness.kl_fitness(stack, ids, dense, candidates[:1], minibatch, batch=2)
    one = dense.copies - copies
    assert one == len(minibatch)
    kl_fitness.kl_fitness(stack, ids, dense, candidates, minibatch, batch=2)
    assert dense.copies - copies - one == one


def test_dense_logits_spill_to_a_mapped_file_when_ram_is_short(tmp_path, monkeypatch):
    source = calibratable_model(tmp_path / "src", layers=2)
    stack = DecoderStack(load_model(str(source), device="cpu", dtype="float32"))
    ids = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    in_ram = kl_fitness.DenseLogits(stack, ids, tmp_path, progress=False)
    monkeypatch.setattr(memory, "available_ram", lambda: in_ram.nbytes)  # half of it is too little
    spilled = kl_fitness.DenseLogits(stack, ids, tmp_path, progress=False)
    assert not in_ram.spilled and spilled.spilled and (tmp_path / "dense-logits.bin").stat().st_size == in_ram.nbytes
    assert torch.equal(spilled.logits, in_ram.logits)
    again = kl_fitness.DenseLogits(stack, ids, tmp_path, progress=False)  # a resumed run reads them back
    assert again.reused and torch.equal(again.logits, in_ram.logits)


def run(embedded_model, output, **options):
    """SHARED_JOBS["evopress"] with `options` changed."""
    job = SHARED_JOBS["evopress"]
    return hubprune.prune(**{**job, "options": {**job["options"], **options}}, output=output, loaded=embedded_model)


def searched(record) -> list:
    """Each generation's best candidate and fitness (not its wall time)."""
    return [(step["candidate"], step["fitness"]) for step in record["method_report"]["history"]]


@pytest.fixture(scope="module")
def reference_run(evopress_run):
    return evopress_run


def test_search_is_never_worse_than_its_first_parent(reference_run):
    report = reference_run.record["method_report"]
    assert report["generations_done"] == 2 and len(report["history"]) == 2
    kl = report["kl_all_calibration_tokens"]
    # The last selection step scores every calibration token and the parent takes part (elitism).
    assert kl["final"] <= kl["initial"] + 1e-9


def test_export_reloads_with_the_in_memory_logits(reference_run, embedded_model):
    plan = PrunePlan.load(reference_run.output / "hubprune_plan.json")
    assert len(plan.skip_attention) == len(plan.skip_mlp) == 3  # k = ceil(0.1 * 30)
    reloaded = AutoModelForCausalLM.from_pretrained(reference_run.output, trust_remote_code=True).eval()
    ids = torch.arange(100, 150)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, apply_plan(embedded_model.model, plan)(ids).logits,
                                   rtol=0, atol=1e-5)
    ppl = reference_run.record["evaluation"]["perplexity"]["default"]
    assert ppl["dense"]["perplexity"] < ppl["pruned"]["perplexity"] < float("inf")


def test_an_interrupted_search_resumes_at_its_generation_with_the_same_result(reference_run, embedded_model,
                                                                               tmp_path, monkeypatch):
    """Generation 1 computed afresh, interrupted, generation 2 on resume: the same search as the reference
    run, so this also shows that a search from scratch is deterministic."""
    checkpoint = evopress._checkpoint

    def interrupt_after_first_generation(context, rng, state):
        state = checkpoint(context, rng, state)
        if state["generation"] == 1:
            raise KeyboardInterrupt
        return state

    monkeypatch.setattr(evopress, "_checkpoint", interrupt_after_first_generation)
    with pytest.raises(KeyboardInterrupt):
        run(embedded_model, tmp_path / "out")
    run_dir = tmp_path / ".out.hubprune-run"
    assert not (tmp_path / "out").exists() and (run_dir / "evopress.json").is_file()
    monkeypatch.setattr(evopress, "_checkpoint", checkpoint)
    scored = []
    fitness = kl_fitness.kl_fitness
    monkeypatch.setattr(kl_fitness, "kl_fitness", lambda *a, **k: scored.append(len(a[3])) or fitness(*a, **k))
    resumed = run(embedded_model, tmp_path / "out")
    # Only generation 2 (two selection steps) and the final check were computed again.
    assert len(scored) == 3
    assert resumed.record["resumed_steps"] == ["dense-perplexity-0", "evopress"]
    assert searched(resumed.record) == searched(reference_run.record)
    assert (tmp_path / "out" / "hubprune_plan.json").read_text() == \
        (reference_run.output / "hubprune_plan.json").read_text()
    assert not run_dir.exists()  # deleted once the output is in place


def test_other_settings_do_not_resume(embedded_model, tmp_path, monkeypatch):
    run_dir = tmp_path / ".out.hubprune-run"
    run_dir.mkdir()
    (run_dir / MARKER).touch()  # made by hubprune, for another job
    (run_dir / "job.json").write_text('{"job": "something else"}')
    (run_dir / "evopress.json").write_text("{}")
    result = run(embedded_model, tmp_path / "out", evopress_generations=0)
    assert result.record["resumed_steps"] == [] and result.record["method_report"]["generations_done"] == 0


def test_selection_steps_longer_than_the_calibration_are_refused(tmp_path):
    with pytest.raises(InvalidOptionError, match="evopress-selection-tokens"):
        hubprune.prune("default", "evopress", sparsity=0.2, output=tmp_path / "x",
                       options={"evopress_tokens": 1024, "evopress_selection_tokens": "128,4096"})
    assert not (tmp_path / "x").exists()


def test_full_default_settings_are_recorded(reference_run):
    settings = reference_run.record["method_report"]["settings"]
    assert settings["generations_reference"] == generations_for(3, 30) == 54
    assert settings["survivors"] == [2, 1] and settings["max_flips"] == 3
    assert get_family("llama").evopress_seq_len == 4096 and settings["seq_len"] == 128  # overridden here
