"""Benchmark FASP next to 2SSP on the same model, calibration windows and sparsity, in one run.

    python bench/fasp.py                                   # embedded SmolLM2-135M + OPT-125M-shaped, CPU
    python bench/fasp.py --device cuda --dtype bfloat16 --seq-len 2048 --calib-samples 128

For each model: FASP's selection time split into calibration forwards (with the Gram matrix accumulation
in their hooks, which no longer synchronise to time themselves) and solves (scores, Cholesky refits),
its peak memory, and the same for 2SSP
(stage 1 + stage 2). The embedded model is calibrated on the embedded corpus and both pruned models'
held-out perplexity is measured; the OPT-125M-shaped model has random weights and random tokens (timing
does not depend on the weights), so it has no perplexity. Peak memory: torch.cuda.max_memory_allocated
on a GPU; on the CPU the process's peak RSS, reset before each method (/proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

from hubprune.data import calibration_windows, load_corpus, token_windows
from hubprune.evaluation.perplexity import perplexity
from hubprune.families import get_family
from hubprune.loading import LoadedModel, ModelSource, load_model, resolve_device
from hubprune.methods.fasp import module_counts, widths
from hubprune.methods.compute.fasp_blocks import prune_blocks
from hubprune.methods.twossp import TwoStageMethod, TwoStageOptions
from hubprune.methods.compute.twossp_stages import two_stages
from hubprune.pipeline import environment, seed_everything
from hubprune.plan import PrunePlan
from hubprune.runs import LayerTensors
from hubprune.sequential import DecoderStack
from hubprune.surgery import apply_plan
from peak_memory import peak_bytes, reset_peak

LLAMA_SHAPES = {  # random weights: timing does not depend on them
    "llama-2-7b-shaped": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=32, vocab_size=32000),
    "llama-tiny-shaped": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=4, vocab_size=1000),
}
OPT_125M = dict(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=50272,
                max_position_embeddings=2048, word_embed_proj_dim=768)


def build(name: str, args) -> tuple[LoadedModel, torch.Tensor, dict]:
    if name == "opt-125m-shaped" or name in LLAMA_SHAPES:
        device = resolve_device(args.device)
        dtype = torch.float32 if args.dtype == "auto" and device.type == "cpu" else getattr(
            torch, "bfloat16" if args.dtype == "auto" else args.dtype)
        config = OPTConfig(**OPT_125M) if name == "opt-125m-shaped" else LlamaConfig(**LLAMA_SHAPES[name])
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        loaded = LoadedModel(model, None, get_family(config.model_type), ModelSource(name, Path(".")), device, dtype)
        windows = torch.randint(4, config.vocab_size, (args.calib_samples, args.seq_len),
                                generator=torch.Generator().manual_seed(0))
        return loaded, windows, {"source": "random token ids", "windows": args.calib_samples, "seq_len": args.seq_len}
    loaded = load_model(name, device=args.device, dtype=args.dtype)
    windows, provenance = calibration_windows(loaded.tokenizer, args.calib_data, args.seq_len, args.calib_samples)
    return loaded, windows, provenance


def timed(device: torch.device, fn):
    reset_peak(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start, peak_bytes(device)


def bench_model(name: str, args) -> dict:
    loaded, windows, provenance = build(name, args)
    device, model = loaded.device, loaded.model
    fasp_widths = widths(module_counts(model), args.sparsity, "params", args.ffn_multiple, args.value_multiple)
    with tempfile.TemporaryDirectory() as tmp:
        restored = LayerTensors(tmp)
        (plan, split), fasp_seconds, fasp_peak = timed(
            device, lambda: prune_blocks(DecoderStack(loaded), windows, fasp_widths, restored, progress=False))
        fasp_model = apply_plan(model, plan, overrides=restored) if loaded.tokenizer is not None else None
    budget = TwoStageMethod.budget(model, args.sparsity, TwoStageOptions(ffn_multiple=args.ffn_multiple))
    run, twossp_seconds, twossp_peak = timed(
        device, lambda: two_stages(DecoderStack(loaded), windows, keep=budget.keep, n_attn=budget.n_attn,
                                   stage2_batch=8, progress=False))
    result = {
        "model": name, "dtype": str(loaded.dtype).removeprefix("torch."), "calibration": provenance,
        "sparsity": args.sparsity,
        "fasp": {"seconds": fasp_seconds, "split_seconds": split, "peak_memory_bytes": fasp_peak,
                 "value_keep": fasp_widths.value_keep, "head_dim": fasp_widths.head_dim,
                 "ffn_keep": fasp_widths.ffn_keep, "predicted_sparsity": fasp_widths.predicted_sparsity},
        "2ssp": {"seconds": twossp_seconds, "stage1_seconds": run["stage1"]["seconds"],
                 "stage2_seconds": run["stage2"]["seconds"], "peak_memory_bytes": twossp_peak,
                 "n_attn": budget.n_attn, "k_keep": budget.keep},
        "fasp_time_vs_2ssp": fasp_seconds / twossp_seconds,
    }
    if fasp_model is not None:
        corpus = load_corpus("default", "evaluation")
        held_out = token_windows(loaded.tokenizer, corpus, args.seq_len, args.ppl_windows)
        twossp_plan = PrunePlan(keep_ffn_neurons=dict(enumerate(run["kept"])),
                                skip_attention=run["removed"])
        result["perplexity"] = {
            "corpus": "default (held-out)", "windows": args.ppl_windows,
            "dense": perplexity(model, held_out, progress=False).perplexity,
            "fasp": perplexity(fasp_model, held_out, progress=False).perplexity,
            "2ssp": perplexity(apply_plan(model, twossp_plan), held_out, progress=False).perplexity,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,opt-125m-shaped")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-data", default="default")
    parser.add_argument("--ffn-multiple", type=int, default=8)
    parser.add_argument("--value-multiple", type=int, default=8)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--output", help="JSON file [bench/results/fasp-<device>.json]")
    args = parser.parse_args(argv)

    seed_everything(0)
    results = [bench_model(name, args) for name in args.models.split(",")]
    device = resolve_device(args.device)
    output = Path(args.output or f"bench/results/fasp-{device.type}.json")
    record = {"command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "environment": {**environment(device), "cpu_threads": torch.get_num_threads()}, "results": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    for r in results:
        split = ", ".join(f"{k} {v:.1f} s" for k, v in r["fasp"]["split_seconds"].items())
        print(f"{r['model']}: fasp {r['fasp']['seconds']:.1f} s ({split}), peak {r['fasp']['peak_memory_bytes'] / 2**20:.0f} MiB; "
              f"2ssp {r['2ssp']['seconds']:.1f} s, peak {r['2ssp']['peak_memory_bytes'] / 2**20:.0f} MiB"
              + (f"; ppl dense {r['perplexity']['dense']:.2f} fasp {r['perplexity']['fasp']:.2f} "
                 f"2ssp {r['perplexity']['2ssp']:.2f}" if "perplexity" in r else ""))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
