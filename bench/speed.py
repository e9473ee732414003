"""Inference speed of pruned models next to the dense one, measured in one run.

    python bench/speed.py                                        # embedded SmolLM2-135M, CPU
    python bench/speed.py --model meta-llama/Llama-2-7b-hf --device cuda --dtype bfloat16 \
        --speed-tokens 2048 --calib-seq-len 2048 --calib-samples 32   # the reference's prefill, on a GPU

Each method x sparsity is pruned in memory (hubprune.prune, calibrated on the embedded corpus or
--calib-data), then every model is timed with hubprune's speed protocol (evaluation/speed.py): prefill
latency of one [1, N] forward and greedy decode throughput with the KV cache at batch 1 and a larger
batch. The dense model is timed right before each pruned one and the ratio is taken against that
adjacent measurement, so slow drift of a shared machine cancels; the spread of the dense timings over
the run is recorded next to the ratios. Ratios are dense time / pruned time, next to the ideal
1/(1-s) for the decoder layers' share and the ratio of all parameters (embeddings and head are not
pruned, so they bound what is possible).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import hubprune
from hubprune.evaluation.speed import SpeedSettings, measure_speed, timer_name
from hubprune.loading import load_model
from hubprune.pipeline import environment
from hubprune.surgery import decoder_parameters, total_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--methods", default="2ssp,fasp")
    parser.add_argument("--sparsities", default="0.25,0.375,0.5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--calib-data", default="default")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--speed-tokens", type=int, help="prefill length [2048 on a GPU, 256 on a CPU]")
    parser.add_argument("--speed-batch", type=int, help="the larger decode batch [16 on a GPU, 4 on a CPU]")
    parser.add_argument("--output", default="bench/results/speed-smollm2-135m-cpu.json")
    args = parser.parse_args()

    dense = load_model(args.model, device=args.device, dtype=args.dtype)
    settings = SpeedSettings.for_device(dense.device, args.speed_tokens, args.speed_batch)
    dense_params = total_parameters(dense.model)
    dense_decoder = decoder_parameters(dense.model)
    timings = {"dense (first)": measure_speed(dense.model, settings, desc="dense")}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for sparsity in map(float, args.sparsities.split(",")):
                name = f"{method} {sparsity:g}"
                result = hubprune.prune(args.model, method, sparsity=sparsity, output=Path(tmp) / name,
                                        device=args.device, dtype=args.dtype, seq_len=args.calib_seq_len,
                                        options={"calib_data": args.calib_data, "calib_samples": args.calib_samples})
                achieved = result.record["sparsity"]["achieved"]
                pruned_params = result.record["parameters"]["pruned"]["total"]
                timings[f"dense before {name}"] = measure_speed(dense.model, settings, desc="dense")
                timings[name] = measure_speed(result.model, settings, desc=name)
                rows[name] = {"method": method, "sparsity_requested": sparsity, "sparsity_achieved": achieved,
                              "parameters": pruned_params,
                              "ideal_speedup_decoder": 1 / (1 - achieved),
                              "ideal_speedup_parameters": dense_params / pruned_params}
                del result
                gc.collect()
    timings["dense (last)"] = measure_speed(dense.model, settings, desc="dense")

    for name, row in rows.items():
        t, reference = timings[name], timings[f"dense before {name}"]
        row.update(prefill_ms=t["prefill_ms"], decode_tokens_per_second=t["decode_tokens_per_second"],
                   peak_memory_bytes=t["peak_memory_bytes"],
                   prefill_speedup=reference["prefill_ms"] / t["prefill_ms"],
                   decode_speedup={b: v / reference["decode_tokens_per_second"][b]
                                   for b, v in t["decode_tokens_per_second"].items()})
    record = {
        "command": "python " + " ".join(sys.argv),
        "model": args.model, "dtype": args.dtype, "parameters_dense": dense_params,
        "decoder_parameters_dense": dense_decoder,
        "protocol": {**settings.to_dict(), "timer": timer_name(dense.device), "inputs": "seeded random token ids"},
        "calibration": {"data": args.calib_data, "samples": args.calib_samples, "seq_len": args.calib_seq_len},
        "dense": {k: v for k, v in timings.items() if k.startswith("dense")},
        "dense_prefill_ms_range": [min(v["prefill_ms"] for k, v in timings.items() if k.startswith("dense")),
                                   max(v["prefill_ms"] for k, v in timings.items() if k.startswith("dense"))],
        "pruned": rows,
        "environment": environment(dense.device),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{'model':<24} {'achieved':>8} {'prefill ms':>10} {'x':>5} {'ideal':>5} "
          + " ".join(f"{'dec b' + b:>8} {'x':>5}" for b in timings["dense (first)"]["decode_tokens_per_second"]))
    for name in timings:
        t, row = timings[name], rows.get(name, {})
        line = f"{name:<24} {row.get('sparsity_achieved', 0):>8.3f} {t['prefill_ms']:>10.1f} " \
               f"{row.get('prefill_speedup', 1):>5.2f} {row.get('ideal_speedup_decoder', 1):>5.2f} "
        line += " ".join(f"{v:>8.1f} {row.get('decode_speedup', {}).get(b, 1):>5.2f}"
                         for b, v in t["decode_tokens_per_second"].items())
        print(line)
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
