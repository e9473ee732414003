"""The prune job on a local model: sharding follows the source, and a failed run leaves no output."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_model

import hubprune
from hubprune.errors import OutputExistsError, PlanError


def test_output_is_sharded_like_the_source(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "src", max_shard_size="60KB")
    assert len(list((tmp_path / "src").glob("*.safetensors"))) > 1
    (tmp_path / "plan.json").write_text(json.dumps({"drop_blocks": [4], "skip_mlp": [1]}))
    hubprune.prune(str(tmp_path / "src"), "manual", options={"plan": str(tmp_path / "plan.json")},
                   output=tmp_path / "out", device="cpu")
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()


def test_a_failed_run_leaves_no_output_and_no_temporary_folder(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "src")
    (tmp_path / "plan.json").write_text(json.dumps({"skip_attention": [9]}))  # the model has 5 layers
    with pytest.raises(PlanError, match="layer 9 out of range"):
        hubprune.prune(str(tmp_path / "src"), "manual", options={"plan": str(tmp_path / "plan.json")},
                       output=tmp_path / "out", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "src"]


def test_existing_output_is_kept_unless_overwrite_and_a_users_folder_always(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path / "src")
    (tmp_path / "plan.json").write_text(json.dumps({"drop_blocks": [0]}))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    run = dict(options={"plan": str(tmp_path / "plan.json")}, device="cpu")
    for overwrite in (False, True):  # --overwrite replaces hubprune outputs only
        with pytest.raises(OutputExistsError):
            hubprune.prune(str(tmp_path / "src"), "manual", output=tmp_path / "mine", overwrite=overwrite, **run)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "mine"
    hubprune.prune(str(tmp_path / "src"), "manual", output=tmp_path / "out", **run)
    (tmp_path / "out" / "stale.txt").write_text("from an earlier run")
    with pytest.raises(OutputExistsError):
        hubprune.prune(str(tmp_path / "src"), "manual", output=tmp_path / "out", **run)
    hubprune.prune(str(tmp_path / "src"), "manual", output=tmp_path / "out", overwrite=True, **run)
    assert not (tmp_path / "out" / "stale.txt").exists() and (tmp_path / "out" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "plan.json", "src"]
