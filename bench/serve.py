"""Speed of pruned models in the serving engines, dense vs pruned, measured in one run.

The embedded SmolLM2-135M (or --model) unpruned and pruned by each of --methods at --sparsity, written
with `--export vllm,gguf` and run in
- vLLM (its own DeciLM model, in its own environment: `make serve-env`): one engine per model, one
  warm-up, then --repeats timed runs of a prefill job (--batch prompts of --prompt-tokens tokens, one new
  token each) and a generation job (--batch prompts, --new-tokens greedy tokens each, EOS ignored);
- llama.cpp (llama-cpp-python, the f32 GGUF, --threads threads): every model loaded in this process and
  timed in turn, repeat by repeat, so slow drift of a shared machine falls on all of them alike: prefill of
  one --prompt-tokens prompt, then --new-tokens greedy tokens one at a time.
Prompts are real text (the embedded corpus' held-out part). Reported: medians with min/max, and the
ratios dense / pruned time (above 1: the pruned model is faster). A machine under load makes ratios
noisy, and a model this small is dominated by fixed costs (embeddings, the head, the engine's own
scheduling), so the ratios are well below the parameter ratio; say so rather than read more into them.

    python bench/serve.py                 -> bench/results/serve-speed-smollm2-135m-cpu.json
    python bench/serve.py --model meta-llama/Llama-2-7b-hf --device cuda --prompt-tokens 2048 \\
        --batch 32 --output bench/results/serve-speed-llama2-7b-GPU.json    # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import hubprune
from hubprune.data import load_corpus
from hubprune.plan import PrunePlan

ROOT = Path(__file__).resolve().parent.parent
ENGINE_OF = {"vllm": "vllm", "gguf": "llama_cpp"}  # export format -> the engine that runs it (--skip's names)

# Runs in vLLM's own environment: timed prefill and generation jobs, as JSON on the last line.
VLLM_SCRIPT = """\
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    folder, prompts, settings = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    llm = LLM(folder, trust_remote_code=True, skip_tokenizer_init=True, enforce_eager=True, dtype=settings["dtype"],
              max_model_len=settings["max_model_len"], gpu_memory_utilization=settings["memory"], seed=0)
    inputs = [{"prompt_token_ids": ids} for ids in prompts]
    prefill = SamplingParams(max_tokens=1, temperature=0)
    generate = SamplingParams(max_tokens=settings["new_tokens"], temperature=0, ignore_eos=True)
    llm.generate(inputs, generate, use_tqdm=False)  # warm-up
    out = {"prefill_s": [], "generate_s": []}
    for _ in range(settings["repeats"]):
        for key, params in (("prefill_s", prefill), ("generate_s", generate)):
            start = time.perf_counter()
            llm.generate(inputs, params, use_tqdm=False)
            out[key].append(time.perf_counter() - start)
    print("TIMINGS " + json.dumps(out))
"""


def prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    """`count` prompts of `length` tokens, consecutive pieces of the embedded corpus' held-out text."""
    ids = tokenizer("\n\n".join(load_corpus("default").texts), add_special_tokens=False).input_ids
    if len(ids) < count * length:
        raise SystemExit(f"the corpus has {len(ids)} tokens; fewer --batch x --prompt-tokens, please")
    return [ids[i * length:(i + 1) * length] for i in range(count)]


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def vllm_times(python: str, folder: Path, rows: list[list[int]], args) -> dict:
    settings = {"dtype": "float32", "new_tokens": args.new_tokens, "repeats": args.repeats, "memory": args.vllm_memory,
                "max_model_len": args.prompt_tokens + args.new_tokens + 8}
    done = subprocess.run([python, "-c", VLLM_SCRIPT, str(folder), json.dumps(rows), json.dumps(settings)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"vLLM failed on {folder}:\n{done.stderr[-3000:]}")
    raw = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("TIMINGS "))[8:])
    return {key.removesuffix("_s"): summary(value) for key, value in raw.items()}


def llama_cpp_times(files: dict[str, Path], row: list[int], args) -> dict:
    import llama_cpp

    context = len(row) + args.new_tokens + 8  # one batch holds the whole context, so `scores` has a row per token
    engines = {name: llama_cpp.Llama(str(path), n_ctx=context, n_batch=context, n_threads=args.threads, verbose=False,
                                     seed=0) for name, path in files.items()}
    times: dict = {name: {"prefill": [], "decode": []} for name in files}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not kept
        for name, llm in engines.items():
            llm.reset()
            start = time.perf_counter()
            llm.eval(row)
            prefill = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.new_tokens):
                llm.eval([int(torch.tensor(llm.scores[llm.n_tokens - 1]).argmax())])
            decode = time.perf_counter() - start
            if repeat:
                times[name]["prefill"].append(prefill)
                times[name]["decode"].append(decode)
    return {name: {key: summary(value) for key, value in entry.items()} for name, entry in times.items()}


def ratios(timings: dict, dense: str = "dense") -> dict:
    """dense median time / pruned median time, per model and job."""
    return {name: {job: timings[dense][job]["median_s"] / t["median_s"] for job, t in entry.items()}
            for name, entry in timings.items() if name != dense}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--methods", default="2ssp,shortgpt")
    parser.add_argument("--sparsity", type=float, default=0.25)
    parser.add_argument("--device", default="cpu", help="where hubprune prunes (the engines pick their own)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="prompts per vLLM job")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--vllm-memory", type=float, default=0.25,
                        help="vLLM's gpu_memory_utilization (of the RAM on its CPU backend)")
    parser.add_argument("--skip", default="", help="engines to leave out: vllm, llama_cpp")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "serve-speed-smollm2-135m-cpu.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    engines = {}
    if "vllm" not in skip:
        engines["vllm"] = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"],
                                         capture_output=True, text=True, check=True).stdout.strip()
    if "llama_cpp" not in skip:
        import llama_cpp

        engines["llama_cpp_python"] = llama_cpp.__version__
    results = {"command": "python " + " ".join(sys.argv), "settings": vars(args),
               "environment": {"python": platform.python_version(), "torch": torch.__version__, **engines,
                               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"},
               "models": {}, "vllm": {}, "llama_cpp": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        empty = Path(tmp) / "empty.json"
        PrunePlan().save(empty)
        jobs = [("dense", "manual", None, {"plan": str(empty)})] + [
            (f"{m} {args.sparsity:g}", m, args.sparsity, {"calib_data": "default", "calib_samples": args.calib_samples})
            for m in args.methods.split(",")]
        for name, method, sparsity, options in jobs:
            folder = Path(tmp) / name.replace(" ", "-")
            result = hubprune.prune(args.model, method, sparsity=sparsity, output=folder, options=options,
                                    device=args.device, dtype="float32", seq_len=args.calib_seq_len,
                                    export=[fmt for fmt, engine in ENGINE_OF.items() if engine not in skip])
            folders[name] = folder
            results["models"][name] = {"sparsity_achieved": result.record["sparsity"]["achieved"],
                                       "parameters": result.record["parameters"]["pruned"]["total"]}
            print(name, results["models"][name], flush=True)
        tokenizer = hubprune.load_model(args.model, device="cpu", dtype="float32").tokenizer
        rows = prompts(tokenizer, args.batch, args.prompt_tokens)
        if "llama_cpp" not in skip:
            files = {name: next(folder.glob("*.gguf")) for name, folder in folders.items()}
            results["llama_cpp"] = {"timings": llama_cpp_times(files, rows[0], args)}
            results["llama_cpp"]["ratios"] = ratios(results["llama_cpp"]["timings"])
            print("llama.cpp", json.dumps(results["llama_cpp"]["ratios"]), flush=True)
        if "vllm" not in skip:
            timings = {name: vllm_times(args.vllm_python, folder / "vllm", rows, args) for name, folder in folders.items()}
            results["vllm"] = {"timings": timings, "ratios": ratios(timings)}
            print("vLLM", json.dumps(results["vllm"]["ratios"]), flush=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
