"""Publishing: `push` against a real Hub-compatible server on localhost (hubprune.testing.hub_server),
through huggingface_hub's own client; the model card; recipes; the GitHub Actions workflows."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, constants, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoModelForCausalLM

from hubprune.errors import AuthenticationError, HubPruneError, InvalidOptionError
from hubprune.hub import PublishError
from hubprune.loading import load_model
from hubprune.push import RECIPE_EXAMPLE, load_recipe, push
from hubprune.testing.hub_server import LocalHub

USERS = {"alice": "hf_alice_token", "bob": "hf_bob_token"}
ALICE, BOB = USERS["alice"], USERS["bob"]
PRUNE = dict(sparsity=0.25, device="cpu", seq_len=64, max_windows=2, ppl=["default"],
             options={"calib_samples": 4, "stage2_samples": 1}, evaluation={"speed": True, "speed_tokens": 16})
REPO = "alice/smollm2-2ssp25"


def test_uploads_go_through_the_lfs_protocol_not_xet():
    assert constants.HF_HUB_DISABLE_XET, "conftest sets HF_HUB_DISABLE_XET=1 before huggingface_hub is imported"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub"), USERS) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """The embedded model pruned with 2SSP, evaluated, carded and pushed: the whole release job."""
    output = tmp_path_factory.mktemp("push") / "out"
    result = push("default", "2ssp", repo_id=REPO, output=output, token=ALICE, endpoint=hub.url, **PRUNE)
    return result


def test_push_publishes_a_model_that_downloads_and_loads_with_the_same_logits(hub, pushed, tmp_path):
    assert pushed.pruned and pushed.published.changed
    folder = snapshot_download(REPO, endpoint=hub.url, token=ALICE, cache_dir=tmp_path / "cache")
    published = sorted(p.name for p in Path(folder).iterdir())
    assert published == sorted(pushed.published.files)
    assert {"README.md", "config.json", "modeling_hubprune.py", "model.safetensors", "results.json",
            "hubprune.json", "tokenizer.json"} <= set(published)
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    local = load_model(str(pushed.folder), device="cpu", dtype="float32").model
    with torch.no_grad():
        assert torch.equal(remote(input_ids=ids).logits, local(input_ids=ids).logits)


def test_a_second_push_of_the_same_result_makes_no_commit(hub, pushed):
    api = HfApi(endpoint=hub.url, token=ALICE)
    commits = len(api.list_repo_commits(REPO))
    again = push("default", "2ssp", repo_id=REPO, output=pushed.folder, token=ALICE, endpoint=hub.url, **PRUNE)
    assert not again.pruned and not again.published.changed  # the output folder already held this job
    assert len(api.list_repo_commits(REPO)) == commits


def test_the_card_carries_hub_metadata_and_the_evaluation(hub, pushed, tmp_path):
    info = HfApi(endpoint=hub.url, token=ALICE).model_info(REPO)
    card = info.card_data
    assert card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and card["base_model_relation"] == "finetune"
    assert card["license"] == "apache-2.0" and card["library_name"] == "transformers"
    assert {"pruned", "hubprune", "2ssp"} <= set(card["tags"])
    results = json.loads((pushed.folder / "results.json").read_text())
    pruned_ppl = results["perplexity"]["default"]["pruned"]["perplexity"]
    text = (pushed.folder / "README.md").read_text()
    assert "model-index:" in text.split("\n---\n")[0]  # in the front matter, read back by the Hub client:
    perplexity = card.eval_results[0]
    assert (perplexity.metric_type, perplexity.dataset_split) == ("perplexity", "validation")
    assert perplexity.metric_value == pytest.approx(pruned_ppl, abs=1e-4)
    assert f"{pruned_ppl:.3f}" in text and f"{results['perplexity']['default']['dense']['perplexity']:.3f}" in text
    assert "trust_remote_code=True" in text and "hubprune prune default --method 2ssp --sparsity 0.25" in text
    assert "arXiv:2501.17771" in text  # the method's paper is cited
    recipe_file = tmp_path / "release.yaml"  # the card's recipe is a valid recipe for this very release
    recipe_file.write_text(text.split("```yaml\n")[1].split("```")[0])
    [job] = load_recipe(recipe_file)
    assert (job["model"], job["method"], job["sparsity"], job["repo_id"]) == ("default", "2ssp", 0.25, REPO)
    assert job["options"]["calib_samples"] == 4 and job["evaluation"]["speed"]
    assert ModelCard.load(pushed.folder / "README.md").data.base_model == card["base_model"]  # huggingface_hub reads it


def test_bad_input_fails_before_pruning_and_publishes_nothing(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(AuthenticationError, match="no Hub token"):
        push("default", "2ssp", repo_id="alice/x", output=tmp_path / "a", endpoint=hub.url, **PRUNE)
    with pytest.raises(AuthenticationError, match="refused the token"):
        push("default", "2ssp", repo_id="alice/x", output=tmp_path / "a", token="hf_wrong", endpoint=hub.url, **PRUNE)
    with pytest.raises(InvalidOptionError, match="not a valid repo id"):
        push("default", "2ssp", repo_id="alice/bad name!", output=tmp_path / "a", token=ALICE, endpoint=hub.url)
    assert not (tmp_path / "a").exists()  # refused before any pruning


def test_nothing_is_published_when_evaluation_fails(hub, tmp_path):
    with pytest.raises(HubPruneError, match="no-such-corpus"):
        push("default", "2ssp", repo_id="alice/failed", output=tmp_path / "out", token=ALICE, endpoint=hub.url,
             **{**PRUNE, "ppl": [str(tmp_path / "no-such-corpus.txt")]})
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=ALICE).model_info("alice/failed")
    assert not (tmp_path / "out").exists()


def test_no_rights_on_another_namespace_or_a_private_repo(hub, pushed, tmp_path):
    with pytest.raises(PublishError, match="refused to let this token write"):
        push(repo_id="alice/bobs-upload", from_dir=pushed.folder, token=BOB, endpoint=hub.url)
    api = HfApi(endpoint=hub.url, token=ALICE)
    api.create_repo("alice/secret", private=True)
    with pytest.raises(PublishError, match="refused to let this token write"):
        push(repo_id="alice/secret", from_dir=pushed.folder, token=BOB, endpoint=hub.url)
    assert len(api.list_repo_commits("alice/secret")) == 1  # only the initial commit


def test_a_server_dying_mid_upload_publishes_nothing_and_a_rerun_completes(pushed, tmp_path):
    root, puts = tmp_path / "hub", []

    def die_at_commit(method, path):
        puts.append(method) if method == "PUT" else None
        return "drop" if method == "POST" and "/commit/" in path else None

    with LocalHub(root, USERS, hook=die_at_commit) as server:
        with pytest.raises(PublishError, match="nothing was published"):
            push(repo_id="alice/crash", from_dir=pushed.folder, token=ALICE, endpoint=server.url)
        assert puts  # the weights (LFS) were sent before the commit failed
        api = HfApi(endpoint=server.url, token=ALICE)
        assert [c.title for c in api.list_repo_commits("alice/crash")] == ["initial commit"]
    puts.clear()
    with LocalHub(root, USERS, hook=lambda m, p: puts.append(m) if m == "PUT" else None) as restarted:
        result = push(repo_id="alice/crash", from_dir=pushed.folder, token=ALICE, endpoint=restarted.url)
        assert result.published.changed and puts == []  # nothing sent twice: the server kept the objects
        files = HfApi(endpoint=restarted.url, token=ALICE).list_repo_files("alice/crash")
        assert sorted(files) == sorted(result.published.files)


def test_push_to_a_branch_and_dry_run(hub, pushed, capsys):
    from hubprune.cli import main

    result = push(repo_id=REPO, from_dir=pushed.folder, token=ALICE, endpoint=hub.url, revision="v1")
    assert result.published.revision == "v1" and not result.published.changed  # same files as main
    dry = ["push", "--from-dir", str(pushed.folder), "--repo-id", "alice/never", "--dry-run", "--endpoint", hub.url]
    assert main([*dry, "--token", "hf_wrong"]) == 2  # a dry run is everything but the upload: the token too
    assert "refused the token" in capsys.readouterr().err
    assert main([*dry, "--token", ALICE]) == 0
    out = capsys.readouterr().out
    assert out.index("removed") < out.index("dry run: would upload")  # the summary comes before the upload
    assert "perplexity" in out
    assert "dry run: would upload" in out and "model.safetensors" in out
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=ALICE).model_info("alice/never")


def test_the_card_states_speed_with_its_spread_and_cautions_against_a_busy_machine(pushed, tmp_path):
    import shutil

    from hubprune.card import write_card

    folder = tmp_path / "copy"
    shutil.copytree(pushed.folder, folder)
    card = write_card(folder, repo_id=REPO).read_text()
    assert "mean ± s.d. of" in card and "Accuracies in %" not in card  # no task ran
    results = json.loads((folder / "results.json").read_text())
    speed = results["speed"]  # what a loaded machine produced once: the pruned prefill timed slower
    speed["pruned"]["prefill_ms"] = speed["dense"]["prefill_ms"] / 0.69
    speed["pruned_vs_dense"]["prefill_speedup"] = 0.69
    (folder / "results.json").write_text(json.dumps(results))
    card = write_card(folder, repo_id=REPO).read_text()
    assert "prefill 0.69x" in card and "Caution: a ratio below 1" in card


def test_a_non_hub_endpoint_without_disabling_xet_is_refused_up_front(hub, pushed, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with pytest.raises(InvalidOptionError, match="HF_HUB_DISABLE_XET=1"):
        push(repo_id="alice/xet", from_dir=pushed.folder, token=ALICE, endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=ALICE).model_info("alice/xet")


def test_a_broken_template_is_one_clear_error(pushed, tmp_path):
    from hubprune.card import write_card

    template = tmp_path / "card.j2"
    template.write_text("---\n{{ card_data }}\n---\n{{ record.no_such_key.value }}\n")
    with pytest.raises(HubPruneError, match="cannot render the model card"):
        write_card(pushed.folder, template=template)


# --- recipes --------------------------------------------------------------------------------------------

def test_a_recipe_expands_sparsities_into_repos_and_validates(tmp_path):
    recipe = tmp_path / "release.yaml"
    recipe.write_text(yaml.safe_dump({
        "defaults": {"device": "cuda", "private": True},
        "jobs": [{"model": "meta-llama/Llama-2-7b-hf", "method": "fasp", "sparsity": [0.2, 0.3],
                  "repo_id": "me/Llama-2-7b-fasp{sparsity_pct}", "options": {"calib_samples": 128}},
                 {"model": "default", "method": "2ssp", "sparsity": 0.25, "repo_id": "me/smollm2", "no_eval": True}]}))
    jobs = load_recipe(recipe)
    assert [(j["repo_id"], j["sparsity"]) for j in jobs] == [
        ("me/Llama-2-7b-fasp20", 0.2), ("me/Llama-2-7b-fasp30", 0.3), ("me/smollm2", 0.25)]
    assert all(j["device"] == "cuda" and j["private"] for j in jobs) and jobs[2]["no_eval"]

    def refused(data, match):
        recipe.write_text(yaml.safe_dump(data))
        with pytest.raises(InvalidOptionError, match=match):
            load_recipe(recipe)

    refused({"jobs": [{"model": "m", "method": "fasp", "sparsity": [0.2, 0.3], "repo_id": "me/x"}]}, "sparsity_pct")
    refused({"jobs": [{"model": "m", "method": "fasp", "repo_id": "me/x", "sparsty": 0.2}]}, "unknown key 'sparsty'")
    refused({"jobs": [{"model": "m", "method": "fasp", "repo_id": "me/x", "seed": "one"}]}, "seed 'one': expected an integer")
    refused({"jobs": [{"model": "m", "method": "fasp"}]}, "missing 'repo_id'")
    refused({"jobs": [{"model": "m", "repo_id": "me/x"}, {"model": "n", "repo_id": "me/x"}]}, "two jobs publish")
    refused({"job": []}, "jobs")
    recipe.write_text(RECIPE_EXAMPLE)  # the example `hubprune push --help` shows is a valid recipe
    assert [j["repo_id"] for j in load_recipe(recipe)] == ["me/Llama-2-7b-fasp20", "me/Llama-2-7b-fasp30"]


# --- GitHub Actions -------------------------------------------------------------------------------------

WORKFLOWS = Path(__file__).parent.parent / ".github" / "workflows"


def _check_workflows(*files) -> subprocess.CompletedProcess:
    """check-jsonschema with its vendored copy of SchemaStore's GitHub workflow schema."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, files)], capture_output=True, text=True)


def test_workflows_follow_the_github_workflow_schema(tmp_path):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml", "hubprune-release.yml"}
    checked = _check_workflows(*files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.yml"  # the validator does reject a workflow GitHub would reject
    broken.write_text((WORKFLOWS / "release.yml").read_text().replace("workflow_dispatch:", "workflow_dispatched:"))
    assert _check_workflows(broken).returncode != 0


def test_release_workflows_take_the_inputs_and_secret_they_promise():
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    reusable = yaml.safe_load((WORKFLOWS / "hubprune-release.yml").read_text())
    on_release, on_call = release[True], reusable[True]  # YAML 1.1 reads the key `on` as True
    assert {"model", "method", "sparsity", "repo-id"} <= set(on_release["workflow_dispatch"]["inputs"])
    assert {"model", "method", "sparsity", "repo-id"} <= set(on_call["workflow_call"]["inputs"])
    assert on_call["workflow_call"]["secrets"]["HF_TOKEN"]["required"]
    job = release["jobs"]["release"]
    assert job["uses"] == "./.github/workflows/hubprune-release.yml" and "HF_TOKEN" in job["secrets"]
    steps = reusable["jobs"]["release"]["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    assert "hubprune \"${args[@]}\"" in run and "GITHUB_STEP_SUMMARY" in run
    assert "${{" not in run  # inputs reach the shell through env, never spliced into the script
    assert any(s.get("uses", "").startswith("actions/cache@") for s in steps)
    methods = on_release["workflow_dispatch"]["inputs"]["method"]["options"]
    from hubprune.methods import methods as registered

    assert set(methods) <= set(registered())


def test_the_results_table_for_job_summaries(pushed):
    out = subprocess.run([sys.executable, "-m", "hubprune.evaluation.report", str(pushed.folder / "results.json"),
                          "--markdown"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("| | metric | dense | pruned |") and "perplexity: default" in out


def test_serving_exports_go_beside_the_weights_and_to_their_own_branch(hub, tmp_path):
    """`push --export vllm,gguf`: the GGUF file on the pushed branch with the weights (where llama.cpp's
    and Ollama's Hub downloads look), the vllm folder alone on the `vllm` branch, and the card says how
    to serve each; a second push changes neither branch."""
    from huggingface_hub import hf_hub_download

    from hubprune.plan import PrunePlan

    plan = tmp_path / "plan.json"
    PrunePlan(skip_attention=[0, 3], skip_mlp=[5]).save(plan)
    repo, out = "alice/smollm2-served", tmp_path / "served"
    run = dict(repo_id=repo, output=out, token=ALICE, endpoint=hub.url, options={"plan": str(plan)}, no_eval=True,
               device="cpu", export=["vllm", "gguf"], gguf_dtype="float16")
    result = push("default", "manual", **run)
    api = HfApi(endpoint=hub.url, token=ALICE)
    main_files = set(api.list_repo_files(repo)) - {".gitattributes"}
    assert "served-F16.gguf" in main_files and not any(f.startswith("vllm") for f in main_files)
    vllm_files = set(api.list_repo_files(repo, revision="vllm")) - {".gitattributes"}
    assert vllm_files == {p.name for p in (out / "vllm").iterdir()}  # nothing of main's left on it
    assert "modeling_hubprune.py" not in vllm_files and "README.md" in vllm_files
    config = json.loads(Path(hf_hub_download(repo, "config.json", revision="vllm", endpoint=hub.url, token=ALICE,
                                             cache_dir=tmp_path / "cache")).read_text())
    assert config["model_type"] == "nemotron-nas"
    assert [e.revision for e in result.exports] == ["vllm"] and result.exports[0].changed
    card = (out / "README.md").read_text()
    assert f"vllm serve {repo} --revision vllm --trust-remote-code" in card
    assert f"llama-server --hf-repo {repo} --hf-file served-F16.gguf" in card
    again = push("default", "manual", **run)
    assert not again.pruned and not again.published.changed and not again.exports[0].changed
    # A `vllm` branch hubprune did not write is never replaced.
    api.create_repo("alice/theirs")
    api.create_branch("alice/theirs", branch="vllm")
    api.upload_file(path_or_fileobj=b"mine", path_in_repo="notes.txt", repo_id="alice/theirs", revision="vllm")
    with pytest.raises(PublishError, match="never replaced"):
        push(repo_id="alice/theirs", from_dir=out, token=ALICE, endpoint=hub.url)
    assert set(api.list_repo_files("alice/theirs", revision="vllm")) - {".gitattributes"} == {"notes.txt"}
    assert "config.json" not in api.list_repo_files("alice/theirs")  # refused before anything was uploaded
