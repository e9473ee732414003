"""ShortGPT and the window method (docs/algorithms.md, "ShortGPT", "Window") on the embedded real model: each choice
equals an independent computation from whole-model forwards, and the export is a stock model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

import hubprune
from hubprune.methods.base import blocks_to_remove
from hubprune.plan import PrunePlan
from hubprune.surgery import apply_plan

SEQ_LEN, WINDOWS, N = 128, 8, 30


def test_block_count_rounds_up_as_the_reference():
    assert blocks_to_remove(0.375, 28) == 11  # Qwen2.5-7B "37.5 %" removes 11/28 = 39.29 %
    assert blocks_to_remove(0.25, 32) == 8
    assert blocks_to_remove(0.3, 10) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point


@pytest.fixture(scope="module")
def reference_states(embedded_model):
    """Independent of hubprune's block walk: every decoder layer's input and output, captured by hooks
    during whole-model forwards of the calibration windows, in fp64."""
    from hubprune.data import calibration_windows

    windows, _ = calibration_windows(embedded_model.tokenizer, "default", SEQ_LEN, WINDOWS)
    inputs, outputs = [[] for _ in range(N)], [[] for _ in range(N)]

    def capture(index):
        def hook(_module, args, output):
            inputs[index].append(args[0][0].double())
            outputs[index].append((output[0] if isinstance(output, tuple) else output)[0].double())
        return hook

    layers = embedded_model.model.model.layers
    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        for window in windows:
            embedded_model.model(window[None], use_cache=False)
    for handle in handles:
        handle.remove()
    return torch.stack([torch.stack(x) for x in inputs]), torch.stack([torch.stack(x) for x in outputs])


def run(method, embedded_model, tmp_path, sparsity=0.2, **options):
    return hubprune.prune("default", method, sparsity=sparsity, output=tmp_path / method, seq_len=SEQ_LEN,
                          options={"calib_samples": WINDOWS, **options}, loaded=embedded_model)


def test_shortgpt_removes_the_lowest_block_influence(embedded_model, reference_states, tmp_path):
    _, outputs = reference_states
    last = outputs[:, :, -1]  # [N, windows, d]
    influence = [1.0] + [1 - F.cosine_similarity(last[i - 1], last[i], dim=-1).mean().item() for i in range(1, N)]
    expected = sorted(sorted(range(N), key=lambda i: influence[i])[:6])
    result = run("shortgpt", embedded_model, tmp_path)
    assert PrunePlan.load(tmp_path / "shortgpt" / "hubprune_plan.json").drop_blocks == expected
    assert result.record["method_report"]["block_influence"] == pytest.approx(influence, abs=1e-5)
    assert result.record["sparsity"]["achieved"] == pytest.approx(6 / N)


def test_shortgpt_all_tokens_follows_the_paper_definition(embedded_model, reference_states, tmp_path):
    inputs, outputs = reference_states
    influence = [1 - F.cosine_similarity(inputs[i], outputs[i], dim=-1).mean().item() for i in range(N)]
    expected = sorted(sorted(range(N), key=lambda i: influence[i])[:6])
    result = run("shortgpt", embedded_model, tmp_path, shortgpt_tokens="all")
    assert result.record["method_report"]["block_influence"] == pytest.approx(influence, abs=1e-5)
    assert PrunePlan.load(tmp_path / "shortgpt" / "hubprune_plan.json").drop_blocks == expected


def test_window_removes_the_most_similar_consecutive_blocks(embedded_model, reference_states, tmp_path):
    _, outputs = reference_states
    last = outputs[:, :, -1]
    k = 6
    similarity = [F.cosine_similarity(last[s], last[s + k], dim=-1).mean().item() for s in range(N - k)]
    start = max(range(N - k), key=lambda s: (similarity[s], s))  # '>=' keeps the later window on a tie
    result = run("window", embedded_model, tmp_path)
    assert PrunePlan.load(tmp_path / "window" / "hubprune_plan.json").drop_blocks == list(range(start + 1, start + k + 1))
    assert not result.record["method_report"]["degenerate_fallback"]


@pytest.mark.parametrize("method", ["shortgpt", "window"])
def test_export_is_a_stock_model_with_the_in_memory_logits(method, embedded_model, tmp_path):
    run(method, embedded_model, tmp_path, sparsity=0.1)
    out = tmp_path / method
    assert not list(out.glob("*.py"))
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == N - 3 and "auto_map" not in config
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()  # no trust_remote_code
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    in_memory = apply_plan(embedded_model.model, PrunePlan.load(out / "hubprune_plan.json"))
    ids = torch.arange(100, 150)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, in_memory(ids).logits, rtol=0, atol=1e-5)


def test_removing_every_block_is_refused_before_loading(tmp_path):
    import subprocess
    import sys

    from conftest import tiny_model

    tiny_model("llama").save_pretrained(tmp_path / "src")  # 5 blocks: 0.95 would remove all of them
    out = subprocess.run([sys.executable, "-m", "hubprune.cli", "prune", str(tmp_path / "src"), "--method", "window",
                          "--sparsity", "0.95", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 2 and "would remove all 5 blocks" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow  # a whole-model forward per candidate (make test-slow); 2SSP stage 2 checks the shared greedy search by default
def test_blockpruner_equals_brute_force_greedy_search(embedded_model, tmp_path):
    """One round (attention, then MLP) on one 32-token window, against the stock model with the chosen
    sub-modules bypassed by output hooks and a whole-model forward per candidate."""
    from hubprune.data import calibration_windows
    from hubprune.evaluation.perplexity import perplexity

    result = hubprune.prune("default", "blockpruner", sparsity=0.03, output=tmp_path / "bp", seq_len=32,
                            options={"calib_samples": 1}, loaded=embedded_model)
    window, _ = calibration_windows(embedded_model.tokenizer, "default", 32, 1)
    model = embedded_model.model
    zero = lambda _module, _args, out: (torch.zeros_like(out[0]), out[1]) if isinstance(out, tuple) else torch.zeros_like(out)  # noqa: E731
    module = lambda layer, kind: getattr(model.model.layers[layer], "self_attn" if kind == "attention" else "mlp")  # noqa: E731
    removed: list[tuple[int, str]] = []
    for kind in ("attention", "mlp"):  # k = ceil(0.03 * 30) = 1 round
        ppl = {}
        for layer in range(N):
            handles = [module(l, k).register_forward_hook(zero) for l, k in removed + [(layer, kind)]]
            ppl[layer] = perplexity(model, window, progress=False).perplexity
            for handle in handles:
                handle.remove()
        removed.append((min(sorted(ppl), key=ppl.get), kind))
    plan = PrunePlan.load(tmp_path / "bp" / "hubprune_plan.json")
    expected = PrunePlan(skip_attention=[l for l, k in removed if k == "attention"],
                         skip_mlp=[l for l, k in removed if k == "mlp"]).normalized(N)
    assert plan == expected
    assert [tuple(s["removed"]) for s in result.record["method_report"]["steps"]] == [(l, k) for l, k in removed]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "bp", trust_remote_code=True).eval()
    ids = torch.arange(100, 150)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, apply_plan(model, plan)(ids).logits, rtol=0, atol=1e-5)


def test_blockpruner_mix_removes_either_kind_until_the_sparsity_is_reached(tmp_path):
    """The original paper's search: each step the best single sub-module of either kind, by whole-model
    perplexity with hooks, until the removed attention + MLP parameters reach s of the decoder's."""
    from conftest import calibratable_model

    from hubprune.data import calibration_windows
    from hubprune.evaluation.perplexity import perplexity
    from hubprune.methods.twossp import module_sizes

    source = calibratable_model(tmp_path / "src", layers=6)
    result = hubprune.prune(str(source), "blockpruner", sparsity=0.3, output=tmp_path / "mix", seq_len=64,
                            device="cpu", options={"calib_samples": 2, "calib_data": "default",
                                                   "blockpruner_mode": "mix"})
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    windows, _ = calibration_windows(AutoTokenizer.from_pretrained(source), "default", 64, 2)
    zero = lambda _module, _args, out: (torch.zeros_like(out[0]), out[1]) if isinstance(out, tuple) else torch.zeros_like(out)  # noqa: E731
    module = lambda layer, kind: getattr(model.model.layers[layer], "self_attn" if kind == "attention" else "mlp")  # noqa: E731
    p_attn, p_mlp, p_main = module_sizes(model)
    size = {"attention": p_attn, "mlp": p_mlp}
    removed: list[tuple[int, str]] = []
    while sum(size[k] for _, k in removed) < 0.3 * p_main:
        ppl = {}
        for candidate in [(l, k) for l in range(6) for k in ("attention", "mlp") if (l, k) not in removed]:
            handles = [module(*c).register_forward_hook(zero) for c in removed + [candidate]]
            ppl[candidate] = perplexity(model, windows, progress=False).perplexity
            for handle in handles:
                handle.remove()
        removed.append(min(ppl, key=ppl.get))  # dict order is (layer, kind): ties keep the first
    assert [tuple(s["removed"]) for s in result.record["method_report"]["steps"]] == removed
    achieved = result.record["sparsity"]["achieved"]
    assert 0.3 <= achieved < 0.3 + max(p_attn, p_mlp) / p_main + 0.01  # the last step crosses the target
