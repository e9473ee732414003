"""Time every implemented method side by side on one model and sparsity, in one run.

    python bench/baselines.py                     # embedded SmolLM2-135M on the CPU, 37.5 %

Each method runs through the library's `prune` (select + apply + export) on the same loaded model;
the time of the method's selection, the achieved sparsity and the held-out perplexity are recorded.
Calibration follows each method's reference setting in kind (2SSP: 32 windows, ShortGPT / window:
--block-windows, BlockPruner: 1 window), all of --seq-len tokens.
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
    parser.add_argument("--output", default="bench/results/baselines-smollm2-135m-cpu.json")
    args = parser.parse_args(argv)

    seed_everything(0)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    methods = {
        "2ssp": {"calib_samples": 32, "calib_data": args.calib_data},
        "shortgpt": {"calib_samples": args.block_windows, "calib_data": args.calib_data},
        "window": {"calib_samples": args.block_windows, "calib_data": args.calib_data},
        "blockpruner": {"calib_samples": 1, "calib_data": args.calib_data},
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
            print(f"{name:<12} {results[name]['select_seconds']:8.1f} s  sparsity {results[name]['sparsity_achieved']:.2%}"
                  f"  ppl {results[name]['perplexity']:.2f}", flush=True)
    base = results["2ssp"]["select_seconds"]
    for entry in results.values():
        entry["time_vs_2ssp"] = entry["select_seconds"] / base
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


if __name__ == "__main__":
    sys.exit(main())
