"""Gemma 3 270M, the optional second real model (Gemma Terms of Use: `make test-gemma` installs it): what
hubprune's GGUF path makes of it, and dense vs 2SSP vs FASP at 25 % perplexity, measured in one run.

1. The Q4_K_M GGUF loaded through the ordinary GGUF path (transformers' loader, dequantized to fp32): the
   config fields that matter (window, layer pattern, both RoPE bases, attention scalar).
2. Perplexity on the embedded corpus's held-out part with windows longer than the 512-token sliding
   window: as loaded; with the sliding layers given the global RoPE base (a loader that knows one base);
   with no window at all (every layer global).
3. 2SSP and FASP at 25 % through `hubprune.prune` (calibrated on the embedded corpus), each evaluated
   dense vs pruned on the same held-out windows.

    python bench/gemma3.py -> bench/results/gemma3-270m-cpu.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import hubprune
from hubprune.data import load_corpus, token_windows
from hubprune.evaluation.perplexity import perplexity
from hubprune.loading import load_model
from hubprune.pipeline import environment
from hubprune.testing.gemma3 import gguf_file, rebuilt

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=1024, help="evaluation window (longer than the 512 window)")
    parser.add_argument("--windows", type=int, default=8, help="held-out evaluation windows")
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "gemma3-270m-cpu.json"))
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    source = gguf_file()
    started = time.perf_counter()
    dense = load_model(str(source), device="cpu", dtype="float32")
    load_seconds = time.perf_counter() - started
    config = dense.model.config
    windows = token_windows(dense.tokenizer, load_corpus("default", "evaluation"), args.seq_len, args.windows)

    def ppl(model) -> float:
        return perplexity(model, windows, progress=False).perplexity

    one_base = {**config.rope_parameters}
    one_base["sliding_attention"] = {**one_base["sliding_attention"],
                                     "rope_theta": config.rope_parameters["full_attention"]["rope_theta"]}
    loading = {
        "gguf": source.name, "load_seconds": load_seconds,
        "fields": {"sliding_window": config.sliding_window, "layer_types": config.layer_types,
                   "rope_parameters": config.rope_parameters, "query_pre_attn_scalar": config.query_pre_attn_scalar,
                   "head_dim": config.head_dim, "final_logit_softcapping": config.final_logit_softcapping},
        "perplexity": {"as_loaded": ppl(dense.model),
                       "sliding_layers_with_the_global_rope_base": ppl(rebuilt(dense.model, rope_parameters=one_base)),
                       "no_sliding_window": ppl(rebuilt(dense.model, layer_types=["full_attention"] * len(config.layer_types)))},
    }
    print(json.dumps(loading["perplexity"]), flush=True)

    pruned = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("2ssp", "fasp"):
            options = {"calib_data": "default", "calib_samples": args.calib_samples}
            started = time.perf_counter()
            result = hubprune.prune(str(source), method, sparsity=0.25, output=Path(tmp) / method, device="cpu",
                                    seq_len=args.calib_seq_len, options=options, ppl=[])
            seconds = time.perf_counter() - started
            pruned[method] = {"achieved_sparsity": result.record["sparsity"]["achieved"], "prune_seconds": seconds,
                              "perplexity": ppl(result.model), "summary": result.record["method_report"].get("summary")}
            print(method, json.dumps(pruned[method]), flush=True)
            del result

    out = {"command": "bench/gemma3.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": "Gemma 3 270M (gemma-3-270m-q4_k_m.gguf, dequantized to fp32)",
           "evaluation": {"corpus": "default (held-out part)", "seq_len": args.seq_len, "windows": args.windows},
           "calibration": {"corpus": "default", "seq_len": args.calib_seq_len, "windows": args.calib_samples},
           "environment": {**environment(torch.device("cpu")), "cpu_threads": torch.get_num_threads()},
           "loading": loading, "dense_perplexity": loading["perplexity"]["as_loaded"], "pruned_25": pruned}
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
