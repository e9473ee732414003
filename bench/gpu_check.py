"""`make gpu-check`: everything this project measures on a CUDA GPU, in one run of about eight minutes,
into one JSON named after the GPU (bench/results/gpu-check-<gpu>.json).

    python bench/gpu_check.py                     # on a CUDA machine (make gpu-check)
    python bench/gpu_check.py --device cpu --quick   # the plumbing only, on a CPU (tiny shapes)

Steps, each a subprocess with its own time limit (a failed or timed-out step is recorded, the others
still run):
1. tests/test_gpu.py: every method end to end in bf16, and healing under bf16 autocast, on a
   TinyLlama-shaped random model with a real tokenizer and text (hubprune.testing.random_model), and the
   SDPA kernel check behind --value-multiple;
2. bench/twossp.py on a Llama-2-7B-shaped random model (2048-token windows, 37.5 %);
3. bench/fasp.py on the same shape (30 %);
4. bench/speed.py: dense vs 2SSP / FASP prefill and decode, measured in one run, on the TinyLlama-shaped
   model.

On a lent machine (no network; its image's python3 holds torch): copy the repository, carry wheels of
what the image lacks or has too old (transformers >= 5.24, gguf, jsonschema, lm-eval, peft), install them with
`pip install --no-deps --no-index`, and run `PYTHONPATH=. python3 bench/gpu_check.py`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_step(name: str, command: list[str], limit: int, output: Path | None) -> dict:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit, env=env)
        code, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, log = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        log = log.decode(errors="replace") if isinstance(log, bytes) else log
    step = {"name": name, "command": " ".join(command), "returncode": code,
            "seconds": round(time.perf_counter() - started, 1), "log_tail": log[-3000:]}
    if output is not None and output.is_file():
        step["result"] = json.loads(output.read_text())
    print(f"{name}: {'ok' if code == 0 else f'FAILED ({code})'} in {step['seconds']} s", flush=True)
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and short runs: checks the plumbing only")
    parser.add_argument("--output", help="JSON file [bench/results/gpu-check-<gpu>.json]")
    args = parser.parse_args(argv)

    import torch
    from transformers import LlamaConfig

    from hubprune.pipeline import environment
    from hubprune.testing.random_model import random_model

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; on a CPU run `--device cpu --quick` to check the plumbing",
              file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    python, dtype = sys.executable, "bfloat16" if device.type == "cuda" else "float32"
    shape = "llama-tiny" if args.quick else "llama-2-7b"
    seq_len = "64" if args.quick else "2048"
    steps = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if device.type == "cuda":
            steps.append(run_step("gpu tests", [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                "tests/test_gpu.py"], 300, None))
        steps.append(run_step("2ssp benchmark", [
            python, "bench/twossp.py", "--shape", shape, "--device", args.device, "--dtype", dtype,
            "--seq-len", seq_len, "--sparsities", "0.375", "--no-naive", "--output", str(tmp / "2ssp.json")],
            150, tmp / "2ssp.json"))
        steps.append(run_step("fasp benchmark", [
            python, "bench/fasp.py", "--models", f"{shape}-shaped", "--device", args.device, "--dtype", dtype,
            "--seq-len", seq_len, "--sparsity", "0.3", "--output", str(tmp / "fasp.json")], 150, tmp / "fasp.json"))
        small = (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4) if args.quick else
                 dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=4))
        model = random_model(tmp / "model", LlamaConfig(**small), vocab_size=1000 if args.quick else 8192,
                             dtype=getattr(torch, dtype))
        steps.append(run_step("speed benchmark", [
            python, "bench/speed.py", "--model", str(model), "--device", args.device, "--dtype", dtype,
            "--methods", "2ssp,fasp", "--sparsities", "0.375", "--calib-data", str(model / "corpus.txt"),
            "--calib-samples", "8", "--calib-seq-len", seq_len] + (["--speed-tokens", "32"] if args.quick else [])
            + ["--output", str(tmp / "speed.json")], 180, tmp / "speed.json"))
    record = {"command": " ".join(["python", "bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "gpu": gpu, "quick": args.quick, "environment": environment(device), "steps": steps,
              "all_passed": all(s["returncode"] == 0 for s in steps)}
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    output = Path(args.output or ROOT / f"bench/results/gpu-check-{slug}{'-quick' if args.quick else ''}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {output}")
    return 0 if record["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
