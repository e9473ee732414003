r"""Wall time of pruning jobs run by one process and by N processes (torchrun), measured in one run.

    python bench/distributed.py                     # this machine: 1 vs 2 processes on the CPU (gloo)
    python bench/distributed.py --nproc 8 --device cuda --model meta-llama/Llama-2-7b-hf --dtype bfloat16 \
        --seq-len 2048 --methods 2ssp,fasp,blockpruner --extra="--calib-samples 128" \
        --output bench/results/distributed-llama-2-7b-8xh100.json

Each repeat runs every configuration of every method once, in turn, so a drift in the machine's load
hits them alike. Two times are read per run: the selection's (`timing_seconds.select` in hubprune.json:
calibration and search, the part that runs in parallel) and the whole command's (start-up, loading,
writing: the same work in every process, so not divided). The configurations:
  CPU:  one process with every core's threads (what a plain run does here); one process with one thread
        (what each of the N processes has); N processes with one thread each.
  GPU:  one process on one GPU; N processes on N GPUs.
Every configuration of a method must choose the same plan (checked). Ratios are per repeat (the paired
runs of one repeat), reported as their median, minimum and maximum.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Small settings for the embedded model on a CPU (with --seq-len 128): a few minutes a run at most.
METHODS = {
    "2ssp": ["--sparsity", "0.25", "--calib-samples", "16", "--stage2-samples", "2"],
    "fasp": ["--sparsity", "0.25", "--calib-samples", "16"],
    "blockpruner": ["--sparsity", "0.03", "--calib-samples", "2"],
    "evopress": ["--sparsity", "0.1", "--evopress-generations", "2", "--evopress-tokens", "2048",
                 "--evopress-seq-len", "256", "--evopress-offspring", "8", "--evopress-initial", "8",
                 "--evopress-selection-tokens", "256,2048"],
}


def configurations(args) -> dict[str, tuple[list[str], dict]]:
    """name -> (launcher prefix, environment changes)."""
    one = [sys.executable, "-m", "hubprune.cli"]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
            "-m", "hubprune.cli"]
    if args.device == "cuda":
        return {"1 process, 1 GPU": (one, {"CUDA_VISIBLE_DEVICES": "0"}),
                f"{args.nproc} processes, {args.nproc} GPUs": (many, {})}
    cores = os.cpu_count() or 1
    return {f"1 process, {cores} threads": (one, {"OMP_NUM_THREADS": str(cores)}),
            "1 process, 1 thread": (one, {"OMP_NUM_THREADS": "1"}),
            f"{args.nproc} processes, 1 thread each": (many, {"OMP_NUM_THREADS": "1"})}


def run(prefix: list[str], env: dict, method: str, args, folder: Path) -> dict:
    output = folder / "out"
    command = [*prefix, "prune", args.model, "--method", method, *METHODS[method], *args.extra.split(), "--seq-len",
               str(args.seq_len), "--device", args.device, "--dtype", args.dtype, "-o", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    record = json.loads((output / "hubprune.json").read_text())
    plan = (output / "hubprune_plan.json").read_text()
    shutil.rmtree(output)
    return {"select_seconds": record["timing_seconds"]["select"], "command_seconds": wall, "plan": plan,
            "environment": record["environment"]}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--extra", default="", help="more `hubprune prune` flags for every run, e.g. --extra='--offload'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="bench/results/distributed-smollm2-135m-cpu.json")
    args = parser.parse_args()
    methods = args.methods.split(",")
    configs = configurations(args)
    times: dict[str, dict[str, list[dict]]] = {m: {c: [] for c in configs} for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in methods:
                for name, (prefix, env) in configs.items():
                    result = run(prefix, env, method, args, Path(tmp))
                    times[method][name].append(result)
                    print(f"repeat {repeat + 1}/{args.repeats} {method:12s} {name:28s} select "
                          f"{result['select_seconds']:7.2f} s  command {result['command_seconds']:7.2f} s", flush=True)
    results = []
    parallel = list(configs)[-1]
    for method in methods:
        runs = times[method]
        plans = {r["plan"] for c in configs for r in runs[c]}
        entry = {"method": method, "same_plan_everywhere": len(plans) == 1,
                 "seconds": {c: {"select": summary([r["select_seconds"] for r in runs[c]]),
                                 "command": summary([r["command_seconds"] for r in runs[c]])} for c in configs},
                 "speedup_of_select": {}, "speedup_of_command": {}}
        for c in configs:
            if c == parallel:
                continue
            for kind in ("select", "command"):
                ratios = [a[f"{kind}_seconds"] / b[f"{kind}_seconds"] for a, b in zip(runs[c], runs[parallel])]
                entry[f"speedup_of_{kind}"][f"{c} / {parallel}"] = summary(ratios)
        results.append(entry)
        if not entry["same_plan_everywhere"]:
            raise SystemExit(f"{method}: the configurations chose different plans")
    document = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": {**vars(args), "method_options": {m: METHODS[m] for m in methods}},
        "protocol": "each repeat runs every configuration once, in turn; speed-ups are per-repeat ratios "
                    "(median, min, max); select = calibration and search (hubprune.json timing_seconds.select), "
                    "command = the whole `hubprune prune` process, start-up and writing included",
        "cpu_count": os.cpu_count(),
        "results": results,
        "environment": times[methods[0]][parallel][0]["environment"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(document, indent=1) + "\n")
    for entry in results:
        for name, ratio in entry["speedup_of_select"].items():
            print(f"{entry['method']:12s} select speed-up {name}: {ratio['median']:.2f} "
                  f"({ratio['min']:.2f}-{ratio['max']:.2f})")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
