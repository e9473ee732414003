"""Time every implemented method side by side on one model and sparsity, in one run.

    python bench/baselines.py                     # embedded SmolLM2-135M on the CPU, 37.5 %

Each method runs through the library's `prune` (select + apply + export) on the same loaded model;
the time of the method's selection, the achieved sparsity and the held-out perplexity are recorded.
Calibration follows each method's reference setting in kind (2SSP: 32 windows, ShortGPT / window:
--block-windows, BlockPruner: 1 window), all of --seq-len tokens. EvoPress keeps the reference's
search (64 initial candidates, 32 offspring, selection 2 then 1) with every token count scaled by
--seq-len / 2048 like the others' windows; it runs --evopress-generations generations, and its time for
the reference's generation count ⌊k(N − k)/1.5⌋ is estimated from them (marked as an estimate).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import hubprune
from hubprune.loading import load_model
from hubprune.pipeline import environment, seed_everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sparsity", type=float, default=0.375)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--block-windows", type=int, default=256, help="calibration windows of ShortGPT / window")
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--calib-data", default="default")
    parser.add_argument("--evopress-generations", type=int, default=3, help="generations timed (then extrapolated)")
    parser.add_argument("--output", default="bench/results/baselines-smollm2-135m-cpu.json")
    args = parser.parse_args(argv)

    seed_everything(0)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    methods = {
        "2ssp": {"calib_samples": 32, "calib_data": args.calib_data},
        "shortgpt": {"calib_samples": args.block_windows, "calib_data": args.calib_data},
        "window": {"calib_samples": args.block_windows, "calib_data": args.calib_data},
        "blockpruner": {"calib_samples": 1, "calib_data": args.calib_data},
        "evopress": {"calib_data": args.calib_data, "evopress_generations": args.evopress_generations,
                     "evopress_tokens": 131072 * args.seq_len // 2048, "evopress_seq_len": 4096 * args.seq_len // 2048,
                     "evopress_selection_tokens": f"{args.seq_len},{32768 * args.seq_len // 2048}"},
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in methods.items():
            result = hubprune.prune(args.model, name, sparsity=args.sparsity, options=options,
                                    output=Path(tmp) / name, seq_len=args.seq_len, ppl=["default"],
                                    max_windows=args.ppl_windows, loaded=loaded)
            record = result.record
            ppl = record["evaluation"]["perplexity"]["default"]
            results[name] = {"options": options, "select_seconds": record["timing_seconds"]["select"],
                             "sparsity_achieved": record["sparsity"]["achieved"],
                             "architecture": record["architecture"],
                             "perplexity_dense": ppl["dense"]["perplexity"], "perplexity": ppl["pruned"]["perplexity"]}
            if name == "evopress":
                results[name]["estimate_reference_generations"] = _evopress_estimate(record["method_report"])
            print(f"{name:<12} {results[name]['select_seconds']:8.1f} s  sparsity {results[name]['sparsity_achieved']:.2%}"
                  f"  ppl {results[name]['perplexity']:.2f}", flush=True)
    base = results["2ssp"]["select_seconds"]
    for entry in results.values():
        entry["time_vs_2ssp"] = entry["select_seconds"] / base
        if "estimate_reference_generations" in entry:
            estimate = entry["estimate_reference_generations"]
            estimate["time_vs_2ssp"] = estimate["select_seconds"] / base
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "model": args.model, "sparsity_requested": args.sparsity, "seq_len": args.seq_len,
        "ppl": {"corpus": "default (held-out)", "windows": args.ppl_windows},
        "environment": {**environment(loaded.device), "cpu_threads": torch.get_num_threads()},
        "results": results}, indent=1) + "\n")
    print(f"results: {output}")
    return 0


def _evopress_estimate(report: dict) -> dict:
    """Selection time with the reference's generation count: the measured fixed costs plus the mean
    measured generation times that count (the perplexity is of the shortened search)."""
    per_generation = sum(step["seconds"] for step in report["history"]) / len(report["history"])
    fixed = report["timing_seconds"]["dense_logits"] + report["initial"]["seconds"] + report["timing_seconds"]["final_check"]
    generations = report["settings"]["generations_reference"]
    return {"estimated": True, "generations": generations, "generations_timed": len(report["history"]),
            "seconds_per_generation": per_generation, "select_seconds": fixed + generations * per_generation}


if __name__ == "__main__":
    sys.exit(main())
