"""Benchmark 2SSP: time of each stage, work done, peak memory, and the ratio to the compute floor.

    python bench/twossp.py                                  # embedded SmolLM2-135M on the CPU
    python bench/twossp.py --device cuda --dtype bfloat16 --shape llama-2-7b --seq-len 2048

The floor is the work 2SSP cannot avoid, timed in the same run: every block forward the cached
procedure needs (stage 1 on dense blocks, stage 2 on width-pruned blocks) times the measured time of
one such forward, plus one head (final norm, lm_head, fp32 loss) per stage-2 candidate. The naive stage
2 (one full forward per candidate, as the reference code) runs on the same input for comparison.
`--shape` builds a model of that shape with random weights and random tokens: timing does not
depend on the weights, so a 7B-shaped benchmark needs no download.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from hubprune.data import calibration_windows
from hubprune.families import get_family
from hubprune.loading import LoadedModel, ModelSource, load_model, resolve_device
from hubprune.methods.twossp import TwoStageMethod, TwoStageOptions
from hubprune.methods.compute.twossp_stages import remove_attention, two_stages
from hubprune.pipeline import environment, seed_everything
from hubprune.sequential import DecoderStack, mlp_parameters
from peak_memory import peak_bytes

SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000),
    "llama-tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=1000),  # gpu_check.py's plumbing check on a CPU
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 5) -> float:
    """Median wall time of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(args) -> tuple[LoadedModel, torch.Tensor, dict]:
    if args.shape:
        device = resolve_device(args.device)
        dtype = getattr(torch, args.dtype if args.dtype != "auto" else "bfloat16")
        config = LlamaConfig(**SHAPES[args.shape])
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        source = ModelSource(f"random {args.shape}", Path("."))
        loaded = LoadedModel(model, None, get_family("llama"), source, device, dtype)
        windows = torch.randint(0, config.vocab_size, (args.calib_samples, args.seq_len))
        return loaded, windows, {"source": "random token ids", "windows": args.calib_samples, "seq_len": args.seq_len}
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    windows, provenance = calibration_windows(loaded.tokenizer, args.calib_data, args.seq_len, args.calib_samples)
    return loaded, windows, provenance


def floor_unit_times(stack: DecoderStack, windows: torch.Tensor, keep: torch.Tensor) -> dict:
    """Seconds of one dense block forward, one width-pruned block forward, and one head, on one window."""
    window = windows[:1]
    hidden = stack.embed(window)
    with stack.block(0) as layer:
        params = mlp_parameters(layer, stack.family, keep)
        dense = timed(lambda: stack.run(layer, 0, hidden), stack.device)
        pruned = timed(lambda: stack.run(layer, 0, hidden, mlp_params=params), stack.device)
    head = timed(lambda: stack.nll(hidden, window), stack.device)
    return {"dense_block": dense, "pruned_block": pruned, "head": head}


def bench_sparsity(loaded: LoadedModel, windows: torch.Tensor, sparsity: float, args) -> dict:
    opts = TwoStageOptions(ffn_multiple=args.ffn_multiple, stage2_batch=args.stage2_batch)
    budget = TwoStageMethod.budget(loaded.model, sparsity, opts)
    device = loaded.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stack = DecoderStack(loaded)
    run = two_stages(stack, windows, keep=budget.keep, n_attn=budget.n_attn, stage2_batch=args.stage2_batch)
    stage1, stage2 = run["stage1"], run["stage2"]
    heads = sum(len(step["candidates"]) for step in stage2["steps"])
    peak = peak_bytes(device)
    keep = [torch.tensor(k, device=device) for k in run["kept"]]

    unit = floor_unit_times(stack, windows, keep[0])
    floor = (stage1["block_forwards"] * unit["dense_block"] + stage2["block_forwards"] * unit["pruned_block"]
             + heads * unit["head"])
    total = stage1["seconds"] + stage2["seconds"]
    result = {
        "sparsity": sparsity, "n_attn": budget.n_attn, "k_keep": budget.keep, "removed_attention": run["removed"],
        "stage1_seconds": stage1["seconds"], "stage2_seconds": stage2["seconds"], "total_seconds": total,
        "stage1_block_forwards": stage1["block_forwards"], "stage2_block_forwards": stage2["block_forwards"],
        "stage2_heads": heads, "unit_seconds": unit, "floor_seconds": floor, "ratio_to_floor": total / floor,
        "peak_memory_bytes": peak,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process VmHWM (cumulative)",
    }
    if args.naive and budget.n_attn:
        naive_stack = DecoderStack(loaded)
        synchronize(device)
        start = time.perf_counter()
        naive_removed, _ = remove_attention(naive_stack, windows[:1], keep, budget.n_attn, mode="naive")
        synchronize(device)
        naive_seconds = time.perf_counter() - start
        result["naive_stage2"] = {
            "seconds": naive_seconds, "block_forwards": naive_stack.block_forwards,
            "same_choice": naive_removed == run["removed"],
            "block_forwards_saved_by_prefix_cache": naive_stack.block_forwards - stage2["block_forwards"],
            "speedup": naive_seconds / stage2["seconds"],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-weight model of this shape instead of --model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sparsities", default="0.25,0.375,0.5")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-data", default="default")
    parser.add_argument("--ffn-multiple", type=int, default=8)
    parser.add_argument("--stage2-batch", type=int, default=8)
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive stage-2 comparison")
    parser.add_argument("--output", help="JSON file [bench/results/2ssp-<model>-<device>.json]")
    args = parser.parse_args(argv)

    seed_everything(0)
    loaded, windows, provenance = build(args)
    results = [bench_sparsity(loaded, windows, float(s), args) for s in args.sparsities.split(",")]
    name = args.shape or ("smollm2-135m" if args.model == "default" else Path(args.model).name)
    output = Path(args.output or f"bench/results/2ssp-{name}-{loaded.device.type}.json")
    record = {"command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]), "model": name,
              "dtype": str(loaded.dtype).removeprefix("torch."), "calibration": provenance,
              "stage2_batch": args.stage2_batch, "ffn_multiple": args.ffn_multiple,
              "environment": {**environment(loaded.device), "cpu_threads": torch.get_num_threads()},
              "results": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'sparsity':>8} {'stage1 s':>9} {'stage2 s':>9} {'total s':>8} {'floor s':>8} {'ratio':>6} {'naive s2 s':>10}")
    for r in results:
        naive = r.get("naive_stage2", {}).get("seconds")
        print(f"{r['sparsity']:>8} {r['stage1_seconds']:>9.2f} {r['stage2_seconds']:>9.2f} {r['total_seconds']:>8.2f} "
              f"{r['floor_seconds']:>8.2f} {r['ratio_to_floor']:>6.2f} {naive if naive is None else round(naive, 2)!s:>10}")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
