"""2SSP (docs/algorithms.md, "2SSP"): the balancing numbers of the spec, both stages against independent
brute-force computations, the whole job on the embedded real model, block-by-block (offload) mode,
and bad input."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from conftest import TWOSSP_SEQ_LEN, TWOSSP_SPARSITIES, calibratable_model, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

import hubprune
from hubprune import embedded, memory
from hubprune.data import calibration_windows
from hubprune.errors import InvalidOptionError
from hubprune.evaluation.perplexity import perplexity
from hubprune.methods.twossp import balance, module_sizes
from hubprune.methods.compute.twossp_stages import neuron_scores, remove_attention, top_neurons
from hubprune.plan import PrunePlan
from hubprune.sequential import DecoderStack
from hubprune.surgery import apply_plan

# -- balancing: the balance, from public configs alone (weightless models) --------------------------------
PAPER_MODELS = {
    "Llama-2-7B": (LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
                   {0.25: (5, 7744), 0.375: (9, 6368), 0.5: (13, 4992)}),
    "Mistral-7B-v0.3": (MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=32768),
                        {0.25: (1, 10005), 0.375: (2, 7893), 0.5: (5, 5994)}),
    "Qwen2.5-7B": (Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
                   {0.25: (0, 13525), 0.375: (0, 10816), 0.5: (1, 8204)}),
    "Phi-3-medium": (Phi3Config(hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                                num_attention_heads=40, num_key_value_heads=10, vocab_size=32064),
                     {0.25: (1, 12480), 0.375: (3, 9920), 0.5: (6, 7466)}),
}


def budget(config, sparsity, **kwargs):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    p_attn, p_mlp, p_main = module_sizes(model)
    return balance(sparsity=sparsity, num_layers=config.num_hidden_layers, ffn_width=config.intermediate_size,
                   attention_parameters=p_attn, mlp_parameters=p_mlp, decoder_parameters=p_main, **kwargs)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_balancing_reproduces_the_spec_table(name):
    config, expected = PAPER_MODELS[name]
    for sparsity, (n_attn, keep) in expected.items():
        result = budget(config, sparsity, ffn_multiple=1)
        assert (result.n_attn, result.keep) == (n_attn, keep), sparsity
        assert result.keep == result.keep_reference


@pytest.mark.parametrize("multiple", [8, 64, 128])
def test_ffn_multiple_keeps_the_aligned_width_closest_to_the_request(multiple):
    config = PAPER_MODELS["Mistral-7B-v0.3"][0]
    for sparsity in (0.25, 0.375, 0.5):
        result = budget(config, sparsity, ffn_multiple=multiple)
        assert result.keep % multiple == 0
        error = lambda keep: abs(dataclasses.replace(result, keep=keep).sparsity_predicted - sparsity)  # noqa: E731
        assert all(error(result.keep) <= error(k) for k in range(multiple, config.intermediate_size + 1, multiple))
        assert error(result.keep) <= error(result.keep_reference) + multiple * 32 * 3 * 4096 / result.decoder_parameters


def test_infeasible_balance_names_the_fix():
    config = PAPER_MODELS["Llama-2-7B"][0]
    with pytest.raises(InvalidOptionError, match="smaller --alpha"):
        budget(config, 0.25, alpha=100)  # nearly every attention module would go: more than 25 % alone
    with pytest.raises(InvalidOptionError, match="larger --alpha"):
        budget(config, 0.9, alpha=0.1)  # 4 attention modules plus every FFN neuron remove only 71 %


# -- the two stages on the embedded real model, against brute force --------------------------------------
SEQ_LEN = 128
STAGE2_LEN = TWOSSP_SEQ_LEN  # stage 2 and the whole-job runs use shorter windows: hundreds of block forwards


@pytest.fixture(scope="module")
def calibration(embedded_model):
    windows, provenance = calibration_windows(embedded_model.tokenizer, "default", SEQ_LEN, 4)
    assert provenance["split"] == "calibration" and windows.shape == (4, SEQ_LEN)
    return windows


@pytest.fixture(scope="module")
def stage1(embedded_model, calibration):
    return neuron_scores(DecoderStack(embedded_model), calibration, progress=False)


def test_stage1_scores_and_selection_equal_a_brute_force_computation(embedded_model, calibration, stage1):
    model = embedded_model.model
    expected = torch.zeros(30, 1536, dtype=torch.float64)

    def hook(index):
        def accumulate(_module, args):  # L2 norm over the tokens of the down_proj input, in fp64
            expected[index] += args[0][0].double().pow(2).sum(0).sqrt()
        return accumulate

    handles = [layer.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        for window in calibration:  # whole-model forwards, one window at a time, as the reference
            model(window[None], use_cache=False)
    for handle in handles:
        handle.remove()
    expected /= len(calibration)
    torch.testing.assert_close(stage1.double(), expected, rtol=1e-5, atol=0)
    chosen = top_neurons(stage1, 1000)
    assert chosen == [sorted(torch.topk(row, 1000).indices.tolist()) for row in expected]


def test_stage2_choice_equals_brute_force_greedy_search(embedded_model, calibration, stage1):
    kept = top_neurons(stage1, 1056)
    keep = [torch.tensor(k) for k in kept]
    window = calibration[:1, :32]  # short: the brute force below is a whole-model forward per candidate
    cached_stack, naive_stack = DecoderStack(embedded_model), DecoderStack(embedded_model)
    cached, cached_steps = remove_attention(cached_stack, window, keep, 2, batch=4, progress=False)
    naive, naive_steps = remove_attention(naive_stack, window, keep, 2, mode="naive", progress=False)

    # Independent: the width-pruned model as stock transformers, attention bypassed by output hooks.
    width_pruned = apply_plan(embedded_model.model, PrunePlan(keep_ffn_neurons=dict(enumerate(kept))))
    assert type(width_pruned).__name__ == "LlamaForCausalLM"
    bypass = lambda _module, _args, out: (torch.zeros_like(out[0]), out[1])  # noqa: E731
    removed: list[int] = []
    for step in range(2):
        ppl = {}
        for candidate in (l for l in range(30) if l not in removed):
            handles = [width_pruned.model.layers[l].self_attn.register_forward_hook(bypass)
                       for l in removed + [candidate]]
            ppl[candidate] = perplexity(width_pruned, window, progress=False).perplexity
            for handle in handles:
                handle.remove()
        removed.append(min(sorted(ppl), key=ppl.get))  # strict: the first (lowest) index among equals
        for steps in (cached_steps, naive_steps):
            got = {int(key.removesuffix(".attention")): p for key, p in steps[step]["candidates"].items()}
            assert got == pytest.approx(ppl, rel=1e-5)
    assert cached == naive == removed
    # Work done: naive runs all 30 blocks per candidate; cached runs each candidate from its own layer
    # on, plus the inputs of the blocks behind the last removal (all of them in the first step).
    first = removed[0]
    assert naive_stack.block_forwards == 30 * 30 + 29 * 30
    candidates = sum(30 - l for l in range(30)) + sum(30 - l for l in range(30) if l != first)
    assert cached_stack.block_forwards == candidates + 29 + (29 - first)


# -- the whole job ---------------------------------------------------------------------------------------
# The runs themselves are the session fixture `twossp_runs` (conftest), which the healing tests share.
SPARSITIES = TWOSSP_SPARSITIES


def test_achieved_sparsity_is_within_half_a_percent_and_recorded(twossp_runs):
    for sparsity, result in twossp_runs.items():
        record = result.record
        assert abs(record["sparsity"]["achieved"] - sparsity) <= 0.005
        report = record["method_report"]
        assert report["balance"]["keep"] % 8 == 0
        # The budget counts attention modules; a bypassed attention also loses its input norm (d weights).
        extra = report["balance"]["n_attn"] * 576 / report["balance"]["decoder_parameters"]
        assert record["sparsity"]["achieved"] == pytest.approx(report["balance"]["sparsity_predicted"] + extra, abs=1e-9)
        plan = PrunePlan.load(result.output / "hubprune_plan.json")
        assert plan.skip_attention == sorted(report["removed_attention"])
        assert len(plan.skip_attention) == report["balance"]["n_attn"]
        assert {len(k) for k in plan.keep_ffn_neurons.values()} == {report["balance"]["keep"]}
        assert report["stage1"]["seconds"] > 0 and report["stage2"]["block_forwards"] > 0
        assert report["calibration"]["windows"] == 4 and report["calibration"]["seq_len"] == STAGE2_LEN


def test_perplexity_is_finite_worse_than_dense_and_ordered_by_sparsity(twossp_runs):
    ppl = [twossp_runs[s].record["evaluation"]["perplexity"]["default"] for s in SPARSITIES]
    dense = ppl[0]["dense"]["perplexity"]
    pruned = [p["pruned"]["perplexity"] for p in ppl]
    assert all(math.isfinite(p) for p in pruned)
    assert dense < pruned[0] < pruned[1]


def test_reloaded_output_gives_the_in_memory_logits(twossp_runs, embedded_model):
    result = twossp_runs[0.5]
    plan = PrunePlan.load(result.output / "hubprune_plan.json")
    in_memory = apply_plan(embedded_model.model, plan)
    reloaded = AutoModelForCausalLM.from_pretrained(result.output, trust_remote_code=True).eval()
    ids = torch.arange(100, 164)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, in_memory(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("config_class", [Phi3Config, Qwen2Config, MistralConfig])
def test_every_family_prunes_and_reloads_with_the_in_memory_logits(tmp_path, config_class):
    # Phi-3's fused gate_up_proj is sliced in both halves; Qwen2's q/k/v biases go with their attention.
    source = calibratable_model(tmp_path / "src", config_class=config_class)
    result = hubprune.prune(str(source), "2ssp", sparsity=0.4, output=tmp_path / "out", device="cpu", seq_len=64,
                            options={"calib_samples": 2, "calib_data": "default", "ffn_multiple": 1})
    plan = PrunePlan.load(tmp_path / "out" / "hubprune_plan.json")
    assert plan.skip_attention and len(plan.keep_ffn_neurons) == 6
    dense = AutoModelForCausalLM.from_pretrained(source).eval()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, apply_plan(dense, plan)(ids).logits, rtol=0, atol=1e-5)
    assert abs(result.record["sparsity"]["achieved"] - 0.4) < 0.01


# -- block by block --------------------------------------------------------------------------------------
def test_offload_gives_the_same_plan_weights_and_perplexity_as_in_memory(tmp_path):
    source = calibratable_model(tmp_path / "src")
    assert len(list(source.glob("*.safetensors"))) > 3
    run = dict(sparsity=0.375, options={"calib_samples": 4, "calib_data": "default", "ffn_multiple": 1},
               ppl=["default"], seq_len=64, max_windows=3, device="cpu")
    memory = hubprune.prune(str(source), "2ssp", output=tmp_path / "memory", **run)
    streamed = hubprune.prune(str(source), "2ssp", output=tmp_path / "streamed", offload=True, **run)
    assert streamed.record["job"]["offload"] and streamed.record["method_report"]["removed_attention"]
    for name in ("hubprune_plan.json",):
        assert (tmp_path / "memory" / name).read_text() == (tmp_path / "streamed" / name).read_text()
    weights = [{k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(f).items()}
               for d in (tmp_path / "memory", tmp_path / "streamed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for key in ("dense", "pruned"):
        assert streamed.record["evaluation"]["perplexity"]["default"][key]["perplexity"] == pytest.approx(
            memory.record["evaluation"]["perplexity"]["default"][key]["perplexity"], rel=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed", trust_remote_code=True)
    assert reloaded.config.hubprune["sparsity_achieved"] == pytest.approx(streamed.record["sparsity"]["achieved"])


PEAK_SCRIPT = """
import sys
from hubprune.pipeline import prune
import transformers.models.llama.modeling_llama  # imports done before the baseline
def status(field):  # this process's own memory (ru_maxrss would include the parent's, inherited at exec)
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) * 1024
base = status("VmRSS:")
prune(sys.argv[1], "2ssp", output=sys.argv[2], sparsity=0.375, device="cpu", seq_len=32, offload=sys.argv[3] == "1",
      options={"calib_samples": 2, "calib_data": sys.argv[4]})
print(status("VmHWM:") - base)
"""


@pytest.mark.slow  # 30 s: two subprocesses on a 538 MB model (make test-slow)
def test_offload_peak_memory_is_a_fraction_of_the_model(tmp_path):
    # 32 blocks of 16.8 MB (fp32): 538 MB of blocks, in 20 MB shards.
    source = calibratable_model(tmp_path / "src", layers=32, hidden=512, ffn=2048, shard="20MB")
    model_bytes = sum(f.stat().st_size for f in source.glob("*.safetensors"))
    text = tmp_path / "calibration.txt"  # a plain file: no dataset library in the measurement
    text.write_text("\n\n".join(embedded.default_corpus("calibration")[:50]))
    growth = {}
    for offload in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(source), str(tmp_path / f"out{offload}"), offload,
                              str(text)], capture_output=True, text=True, check=True)
        growth[offload] = int(out.stdout.split()[-1])
    assert growth["0"] > model_bytes  # in memory: the whole model (and its pruned copy) is resident
    assert growth["1"] < 0.4 * model_bytes, growth  # streamed: about one block plus one output shard


# -- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--sparsity", "0"], "strictly between 0 and 1"),
    (["--sparsity", "1"], "strictly between 0 and 1"),
    (["--sparsity", "-0.2"], "strictly between 0 and 1"),
    (["--sparsity", "0.25", "--alpha", "100"], "smaller --alpha"),
    (["--sparsity", "0.25", "--alpha", "0"], "--alpha 0.0: must be greater than 0"),
    (["--sparsity", "0.25", "--stage2-samples", "40"], "cannot exceed --calib-samples"),
    (["--sparsity", "0.25", "--plan", "x.yaml"], "--plan does not apply"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, flags, message):
    tiny_model("llama").save_pretrained(tmp_path / "src")
    out = subprocess.run([sys.executable, "-m", "hubprune.cli", "prune", str(tmp_path / "src"), "--method", "2ssp",
                          "--device", "cpu", "-o", str(tmp_path / "out"), *flags], capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_model_that_does_not_fit_is_streamed_automatically(tmp_path, monkeypatch):
    """The machine's free RAM cannot be lowered in a test, so it is reported lower: between what one
    block needs and what the whole model needs."""
    from hubprune import loading

    source = calibratable_model(tmp_path / "src")
    config = AutoModelForCausalLM.from_pretrained(source).config
    whole = loading.preflight(config, torch.float32, torch.device("cpu"), None).needed["ram"]
    streamed = loading.preflight(config, torch.float32, torch.device("cpu"), None, offload=True).needed["ram"]
    assert streamed < whole
    monkeypatch.setattr(memory, "available_ram", lambda: (streamed + whole) // 2)
    with pytest.raises(loading.InsufficientResourcesError):
        loading.load_model(str(source), device="cpu", dtype="float32", offload=False)
    assert loading.load_model(str(source), device="cpu", dtype="float32", offload=None).shards is not None
    result = hubprune.prune(str(source), "2ssp", sparsity=0.3, output=tmp_path / "out", device="cpu", seq_len=64,
                            options={"calib_samples": 2, "calib_data": "default"}, ppl=["default"], max_windows=2)
    assert result.record["streamed_block_by_block"]
    evaluated = hubprune.evaluate(str(tmp_path / "out"), ppl=["default"], seq_len=64, max_windows=2, device="cpu",
                                  baseline="none")
    assert evaluated["perplexity"]["default"]["pruned"]["perplexity"] == pytest.approx(
        result.record["evaluation"]["perplexity"]["default"]["pruned"]["perplexity"], rel=1e-5)


# -- streaming: how often the disk is read -----------------------------------------------------------------
def test_streamed_blocks_are_read_from_disk_once_when_cached_and_once_per_visit_otherwise(tmp_path, monkeypatch):
    from hubprune import loading, sequential
    from hubprune.sequential import BlockStore, DecoderStack, stack_perplexity

    source = calibratable_model(tmp_path / "src", layers=4)
    windows = torch.randint(3, 200, (2, 16), generator=torch.Generator().manual_seed(0))
    results = {}
    for cache in (False, True):
        loaded = loading.load_model(str(source), device="cpu", dtype="float32", offload=True)
        loaded.shards.store = BlockStore(loaded.shards, "model.layers.", 4, torch.float32, cache=cache)
        stack = DecoderStack(loaded)
        first = stack_perplexity(stack, windows, progress=False).perplexity
        again = stack_perplexity(DecoderStack(loaded), windows, progress=False).perplexity  # a second search step
        results[cache] = (first, again, loaded.shards.store.disk_reads)
    assert results[False][2] == 8 and results[True][2] == 4  # 2 passes x 4 blocks; with the cache, 4 in all
    assert results[False][:2] == results[True][:2] and results[True][0] == results[True][1]
    # The policy: never on the CPU (streaming there is about host memory); on a GPU when they fit in RAM.
    assert not sequential.host_cache_fits(loaded.shards, "model.layers.", torch.device("cpu"), torch.float32)
    monkeypatch.setattr(memory, "available_ram", lambda: 10**12)
    assert sequential.host_cache_fits(loaded.shards, "model.layers.", torch.device("cuda"), torch.float32)
    monkeypatch.setattr(memory, "available_ram", lambda: 10**5)
    assert not sequential.host_cache_fits(loaded.shards, "model.layers.", torch.device("cuda"), torch.float32)
