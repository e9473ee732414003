"""Plans: the file format, validation with clear errors, and the canonical form."""
from __future__ import annotations

import json

import pytest

from hubprune.errors import PlanError
from hubprune.plan import PrunePlan


def test_json_and_yaml_files_give_the_same_plan(tmp_path):
    data = {"keep_ffn_neurons": {"1": [3, 0, 2]}, "skip_attention": [0], "skip_mlp": [2], "drop_blocks": [4]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    (tmp_path / "p.yaml").write_text("keep_ffn_neurons: {'1': [3, 0, 2]}\nskip_attention: [0]\nskip_mlp: [2]\ndrop_blocks: [4]\n")
    assert PrunePlan.load(tmp_path / "p.json") == PrunePlan.load(tmp_path / "p.yaml")
    plan = PrunePlan.load(tmp_path / "p.json")
    plan.save(tmp_path / "again.json")
    assert PrunePlan.load(tmp_path / "again.json").normalized(5) == plan.normalized(5)


def test_omitted_keys_remove_nothing():
    plan = PrunePlan.from_dict({})
    assert plan.is_empty() and plan.kept_layers(3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"skip_attention": [7]}, "skip_attention: layer 7 out of range; the model has layers 0..4"),
        ({"drop_blocks": [1, 1]}, "drop_blocks: layer 1 listed twice"),
        ({"keep_ffn_neurons": {"0": [96]}}, "keep_ffn_neurons[0]: neuron 96 out of range 0..95"),
        ({"keep_ffn_neurons": {"0": [1, 1]}}, "keep_ffn_neurons[0] lists a neuron twice"),
        ({"keep_ffn_neurons": {"0": []}}, "use skip_mlp: [0]"),
        ({"keep_ffn_neurons": {"2": [1]}, "skip_mlp": [2]}, "layer 2 both keeps FFN neurons and removes its MLP"),
        ({"drop_blocks": [0, 1, 2, 3, 4]}, "removes every decoder block"),
    ],
)
def test_validation_names_the_problem(data, message):
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        PrunePlan.from_dict(data).validate(num_layers=5, ffn_width=96)


@pytest.mark.parametrize(
    ("data", "message"),
    [({"skip_atention": [1]}, "unknown plan key"), ({"skip_mlp": ["x"]}, "must be integers"), ([1, 2], "must be a mapping"),
     ({"skip_mlp": [1.9]}, "1.9 is not a whole number"), ({"drop_blocks": [True]}, "True is not a whole number"),
     ({"keep_ffn_neurons": {"00": [1]}}, "'00' is not a layer index"),
     ({"keep_ffn_neurons": {"0": [1], 0: [2]}}, "listed twice"), ({"skip_mlp": 3}, "must be a list"),
     ({"keep_value_channels": {"1": [[0, 1.0]]}}, "not a whole number"), ({"residual_width": 8.5}, "whole number")],
)
def test_malformed_plans_are_refused(data, message):
    with pytest.raises(PlanError, match=message):
        PrunePlan.from_dict(data)


def test_unparseable_file_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="cannot parse plan file"):
        PrunePlan.load(tmp_path / "bad.json")
    with pytest.raises(PlanError, match="does not exist"):
        PrunePlan.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("dup.json", b'{"skip_mlp": [1], "skip_mlp": [2]}', "'skip_mlp' appears twice"),
    ("dup.json", b'{"keep_ffn_neurons": {"0": [1], "0": [2]}}', "'0' appears twice"),
    ("dup.yaml", b"keep_ffn_neurons:\n  1: [0]\n  1: [3]\n", "1 appears twice"),
    ("latin1.yaml", b"# caf\xe9\nskip_mlp: [1]\n", "not UTF-8"),
])
def test_plan_files_that_would_be_silently_coerced_are_refused(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PlanError, match=message):
        PrunePlan.load(tmp_path / name)


def test_block_with_attention_and_mlp_skipped_is_dropped():
    plan = PrunePlan(skip_attention=[1, 2], skip_mlp=[2, 3], keep_ffn_neurons={2: [0]}).normalized(5)
    assert plan.drop_blocks == [2]
    assert plan.skip_attention == [1] and plan.skip_mlp == [3] and plan.keep_ffn_neurons == {}
