"""Healing on the embedded SmolLM2-135M: held-out perplexity before and after a fixed token budget of
distillation from the dense model, for 2SSP and FASP at 25 % and 37.5 %, with wall time and peak memory.

Each configuration is one `hubprune.prune(..., heal=...)` run, so dense, pruned and healed come from the
same run and the same held-out windows (the embedded corpus's evaluation part); healing reads only its
calibration part. Peak memory is the process's (CPU) or the device's (GPU).

    python bench/heal.py                          -> bench/results/heal-smollm2-135m-cpu.json
    python bench/heal.py --device cuda --steps 200 -> bench/results/heal-smollm2-135m-<gpu>.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

import hubprune
from hubprune.pipeline import environment

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("2ssp", 0.25), ("2ssp", 0.375), ("fasp", 0.25), ("fasp", 0.375)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=256, help="calibration, healing and evaluation windows")
    parser.add_argument("--windows", type=int, default=32, help="held-out evaluation windows")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--params", default="lora", choices=("lora", "all"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--only", help="run one configuration, e.g. 2ssp:0.25")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    configs = [c for c in CONFIGS if not args.only or f"{c[0]}:{c[1]:g}" == args.only]
    heal = {"method": "kd", "steps": args.steps, "batch": args.batch, "params": args.params, "lr": args.lr}
    rows = []
    with tempfile.TemporaryDirectory(prefix="hubprune-bench-heal-") as tmp:
        for method, sparsity in configs:
            started = time.perf_counter()
            result = hubprune.prune("default", method, output=Path(tmp) / f"{method}-{sparsity}", sparsity=sparsity,
                                    device=args.device, seq_len=args.seq_len, ppl=["default"],
                                    max_windows=args.windows, options={"calib_samples": args.calib_samples}, heal=heal)
            record = result.record
            ppl = record["evaluation"]["perplexity"]["default"]
            h = record["heal"]
            rows.append({
                "method": method, "sparsity": sparsity, "sparsity_achieved": record["sparsity"]["achieved"],
                "perplexity": {r: ppl[r]["perplexity"] for r in ("dense", "pruned", "healed")},
                "healed_over_pruned": ppl["healed"]["perplexity"] / ppl["pruned"]["perplexity"],
                "heal_tokens": h["tokens"], "heal_seconds": h["seconds"], "seconds_per_step": h["seconds_per_step"],
                "kd_loss": {"first": h["loss"]["first"], "last": h["loss"]["last"]},
                "teacher_mean_kept_probability": h["teacher"]["mean_kept_probability"],
                "trainable_parameters": h["trainable_parameters"], "peak_memory_bytes": h["peak_memory_bytes"],
                "prune_and_heal_seconds": time.perf_counter() - started,
            })
            print(json.dumps(rows[-1]), flush=True)
    env = environment(torch.device(args.device))
    name = "cpu" if args.device == "cpu" else re.sub(r"[^a-z0-9]+", "-", env.get("gpu", args.device).lower()).strip("-")
    output = Path(args.output or ROOT / "bench" / "results" / f"heal-smollm2-135m-{name}.json")
    doc = {"command": "python bench/" + Path(__file__).name + " " + " ".join(argv if argv is not None else sys.argv[1:]),
           "settings": {**vars(args), "heal": heal}, "protocol": {
               "evaluation": f"{args.windows} held-out windows of {args.seq_len} tokens of the embedded corpus",
               "healing_text": "the embedded corpus's calibration part (never the evaluation part)"},
           "results": rows, "environment": env}
    output.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
