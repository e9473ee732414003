"""Published files name no local paths: a model pruned from a private folder, with a plan and a corpus
from private folders, publishes their names only (hubprune.json, config.json, results.json, the card)."""
from __future__ import annotations

import json

import pytest
import yaml
from conftest import calibratable_model

import hubprune
from hubprune.card import write_card
from hubprune.errors import InvalidOptionError
from hubprune.privacy import public


def test_local_paths_become_names_and_everything_else_stays():
    assert public({"a": "/home/me/models/llama", "b": ["~/x/plan.yaml", "./out", "meta-llama/Llama-2-7b-hf"],
                   "c": "c4", "d": 3, "e": "removed 3/32 blocks"}) == {
        "a": "llama", "b": ["plan.yaml", "out", "meta-llama/Llama-2-7b-hf"], "c": "c4", "d": 3,
        "e": "removed 3/32 blocks"}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    private = tmp_path_factory.mktemp("home-alice-private")
    source = calibratable_model(private / "my-secret-model", layers=3)
    plan = private / "plans" / "plan.yaml"
    plan.parent.mkdir()
    plan.write_text(yaml.safe_dump({"skip_attention": [1]}))
    corpus = private / "corpus.txt"
    corpus.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 400))
    out = private / "outputs" / "pruned"
    hubprune.prune(str(source), "manual", output=out, options={"plan": str(plan)}, device="cpu",
                   ppl=[str(corpus)], seq_len=32, max_windows=2, run_dir=private / "run")
    write_card(out, repo_id="alice/pruned")
    return private, source, out


def test_published_files_carry_no_local_path(pruned):
    private, _, out = pruned
    for name in ("hubprune.json", "config.json", "results.json", "README.md", "hubprune_plan.json"):
        text = (out / name).read_text()
        assert str(private) not in text, name
        assert "home-alice-private" not in text, name
    record = json.loads((out / "hubprune.json").read_text())
    assert record["job"]["model"] == "my-secret-model" and record["job"]["options"]["plan"] == "plan.yaml"
    assert record["job"]["output"] == "pruned" and record["source"]["reference"] == "my-secret-model"


def test_eval_asks_for_a_local_baseline_it_cannot_know(pruned):
    _, source, out = pruned
    with pytest.raises(InvalidOptionError, match="--baseline PATH"):
        hubprune.evaluate(str(out), ppl=["default"], seq_len=32, max_windows=1, device="cpu")
    results = hubprune.evaluate(str(out), ppl=["default"], seq_len=32, max_windows=1, device="cpu",
                                baseline=str(source))
    assert set(results["models"]) == {"dense", "pruned"}
