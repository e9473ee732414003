"""SliceGPT next to 2SSP at the same requested sparsity, in one run: pruning time, peak memory, the
parameters actually removed, and held-out perplexity.

    python bench/slicegpt.py                                   # embedded SmolLM2-135M on the CPU, 25 %
    python bench/slicegpt.py --device cuda --dtype bfloat16 --model meta-llama/Llama-2-7b-hf --seq-len 2048

Each run is a fresh process (so its peak memory is its own) that loads the model, then runs the
library's `prune` with dense and pruned perplexity. Peak memory is the process's peak resident set
(VmHWM) on a CPU, `torch.cuda.max_memory_allocated` on a GPU; the memory right after loading is
recorded next to it, so the job's own working set is the difference. Calibration: 2SSP with its
reference 32 windows, SliceGPT with the same 32 and with its reference 256, all of --seq-len tokens.
Note that --sparsity means different things: 2SSP removes that fraction of the decoder-layer
parameters, SliceGPT slices that fraction of the hidden width (both fractions are recorded).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = {  # name -> (method, calibration windows)
    "2ssp": ("2ssp", 32),
    "slicegpt (32 windows)": ("slicegpt", 32),
    "slicegpt (256 windows)": ("slicegpt", 256),
}


def child(args) -> dict:
    """One run, in this process: load, prune with perplexity, report."""
    import tempfile

    import torch

    import hubprune
    from hubprune.loading import load_model
    from hubprune.pipeline import environment, seed_everything

    from peak_memory import current_bytes, peak_bytes

    method, windows = RUNS[args.child]
    seed_everything(0)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    after_load = current_bytes(loaded.device)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)
    with tempfile.TemporaryDirectory() as tmp:
        result = hubprune.prune(args.model, method, sparsity=args.sparsity, output=Path(tmp) / "out",
                                options={"calib_samples": windows, "calib_data": args.calib_data},
                                seq_len=args.seq_len, ppl=["default"], max_windows=args.ppl_windows, loaded=loaded)
    record = result.record
    ppl = record["evaluation"]["perplexity"]["default"]
    report = record["method_report"]
    return {
        "method": method, "calibration_windows": windows, "sparsity_requested": args.sparsity,
        "sparsity_achieved": record["sparsity"]["achieved"], "slicing": report.get("slicing"),
        "parameters": record["parameters"], "select_seconds": record["timing_seconds"]["select"],
        "apply_seconds": record["timing_seconds"]["apply"], "method_timing_seconds": report.get("timing_seconds"),
        "memory_after_load_bytes": after_load, "peak_memory_bytes": peak_bytes(loaded.device),
        "peak_memory_kind": ("torch.cuda.max_memory_allocated" if loaded.device.type == "cuda"
                             else "process peak resident set (VmHWM)"),
        "perplexity_dense": ppl["dense"]["perplexity"], "perplexity_pruned": ppl["pruned"]["perplexity"],
        "environment": {**environment(loaded.device), "cpu_threads": torch.get_num_threads()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sparsity", type=float, default=0.25)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--calib-data", default="default")
    parser.add_argument("--output", default="bench/results/slicegpt-smollm2-135m-cpu.json")
    parser.add_argument("--child", choices=sorted(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    forwarded = list(argv if argv is not None else sys.argv[1:])
    results = {}
    for name in RUNS:
        done = subprocess.run([sys.executable, __file__, *forwarded, "--child", name], check=True,
                              capture_output=True, text=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:<24} select {r['select_seconds']:7.1f} s  peak {r['peak_memory_bytes'] / 2**20:7.0f} MiB "
              f"(loaded {r['memory_after_load_bytes'] / 2**20:6.0f})  decoder params removed "
              f"{r['sparsity_achieved']:.2%}  ppl {r['perplexity_dense']:.2f} -> {r['perplexity_pruned']:.2f}", flush=True)
    base = results["2ssp"]["select_seconds"]
    for entry in results.values():
        entry["select_time_vs_2ssp"] = entry["select_seconds"] / base
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *forwarded]),
        "model": args.model, "dtype": args.dtype, "seq_len": args.seq_len,
        "ppl": {"corpus": "default (held-out)", "windows": args.ppl_windows},
        "results": results}, indent=1) + "\n")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
