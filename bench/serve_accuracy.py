"""How closely the serving engines reproduce transformers on hubprune's exports.

The embedded SmolLM2-135M, unpruned and pruned by a plan (attention removed in 4 blocks, block 0 included, MLPs in 3,
uneven FFN widths), exported as `vllm` and `gguf` (f32): fp32 prompt log-probs of two prompts in vLLM
(its own DeciLM model, in its own environment) and in llama.cpp (llama-cpp-python, f32 KV cache),
against transformers in this process. Needs `make serve-env`.

    python bench/serve_accuracy.py [--vllm-python .venv-vllm/bin/python]
        -> bench/results/serve-accuracy-smollm2-135m-cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hubprune  # noqa: E402
from hubprune.plan import PrunePlan  # noqa: E402
from hubprune.serving import export  # noqa: E402
from test_serving import EMBEDDED_PLAN, PROMPTS, VLLM_SCRIPT  # noqa: E402


def transformers_logprobs(model, rows: list[list[int]]) -> list[list[float]]:
    out = []
    with torch.no_grad():
        for row in rows:
            logprobs = torch.log_softmax(model(torch.tensor([row])).logits[0, :-1].double(), dim=-1)
            out.append(logprobs.gather(1, torch.tensor(row[1:])[:, None])[:, 0].tolist())
    return out


def llama_cpp_logprobs(path: Path, rows: list[list[int]]) -> list[list[float]]:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    out = []
    for row in rows:
        llm.reset()
        llm.eval(row)
        logprobs = torch.log_softmax(torch.tensor(llm.scores[:len(row) - 1], dtype=torch.float64), dim=-1)
        out.append(logprobs.gather(1, torch.tensor(row[1:])[:, None])[:, 0].tolist())
    return out


def vllm_logprobs(python: str, folder: Path, rows: list[list[int]]) -> list[list[float]]:
    done = subprocess.run([python, "-c", VLLM_SCRIPT, str(folder), json.dumps(rows)], capture_output=True, text=True,
                          check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("LOGPROBS "))[9:])


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "serve-accuracy-smollm2-135m-cpu.json"))
    args = parser.parse_args()
    vllm_version = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    import llama_cpp

    results = {"command": "python bench/serve_accuracy.py", "prompts": PROMPTS, "dtype": "float32",
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "vllm": vllm_version, "llama_cpp_python": llama_cpp.__version__,
                               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"},
               "models": {}}
    tokenizer = hubprune.load_model("default", device="cpu", dtype="float32").tokenizer
    rows = [tokenizer(p).input_ids for p in PROMPTS]
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in (("unpruned", PrunePlan()), ("pruned", EMBEDDED_PLAN)):
            plan_file = Path(tmp) / f"{name}.json"
            plan.save(plan_file)
            result = hubprune.prune("default", "manual", output=Path(tmp) / name, options={"plan": str(plan_file)},
                                    device="cpu", dtype="float32")
            expected = transformers_logprobs(result.model, rows)
            vllm_folder = export(Path(tmp) / name, "vllm", Path(tmp) / f"{name}-vllm")
            gguf_file = export(Path(tmp) / name, "gguf", Path(tmp) / f"{name}.gguf")
            results["models"][name] = {
                "plan": {"ffn_widths": {layer: len(kept) for layer, kept in plan.keep_ffn_neurons.items()},
                         "skip_attention": plan.skip_attention, "skip_mlp": plan.skip_mlp},
                "max_abs_logprob_diff": {"vllm": max_diff(vllm_logprobs(args.vllm_python, vllm_folder, rows), expected),
                                         "llama_cpp": max_diff(llama_cpp_logprobs(gguf_file, rows), expected)}}
            print(name, results["models"][name]["max_abs_logprob_diff"], flush=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
