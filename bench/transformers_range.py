"""Which transformers releases load and run hubprune's remote code (the range the model card states).

Prunes the embedded SmolLM2-135M with a plan that uses every part of the remote code's Llama path
(uneven FFN widths, attention and MLPs removed, a block dropped), then, for each --versions release
installed on its own (`pip install --no-deps --target`, next to this environment's torch and
tokenizers), loads the output with `AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)`
in a fresh process, computes fp32 logits and an 8-token greedy continuation, and compares them with the
installed transformers' own. Writes what worked and, for what did not, the error's last line.

    python bench/transformers_range.py   -> bench/results/transformers-range.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = """\
import sys, torch, transformers
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, dtype=torch.float32).eval()
ids = torch.arange(1, 40)[None]
with torch.no_grad():
    logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
torch.save({"logits": logits, "generated": generated, "version": transformers.__version__}, sys.argv[2])
"""


def run_check(folder: Path, result: Path, site: Path | None, modules: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", CHECK, str(folder), str(result)], capture_output=True, text=True,
                          env=env, timeout=600)


def main() -> None:
    import torch
    import transformers

    import hubprune
    from hubprune.plan import PrunePlan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default="5.19.0,5.20.2,5.21.1,5.22.2,5.23.0")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "hubprune" / "transformers"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "transformers-range.json"))
    args = parser.parse_args()
    results = {"command": "python bench/transformers_range.py", "installed": transformers.__version__,
               "torch": torch.__version__, "versions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = PrunePlan(keep_ffn_neurons={1: list(range(0, 1536, 3))}, skip_attention=[4], skip_mlp=[6],
                         drop_blocks=[10])
        plan.save(tmp / "plan.json")
        hubprune.prune("default", "manual", output=tmp / "out", options={"plan": str(tmp / "plan.json")},
                       device="cpu", dtype="float32")
        done = run_check(tmp / "out", tmp / "reference.pt", None, tmp / "modules-installed")
        if done.returncode:
            raise SystemExit(f"the installed transformers fails: {done.stderr[-2000:]}")
        reference = torch.load(tmp / "reference.pt")
        results["versions"][transformers.__version__] = {"works": True, "max_abs_logit_diff": 0.0}
        for version in args.versions.split(","):
            site = Path(args.cache) / version
            if not site.is_dir():
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                                f"transformers=={version}"], check=True)
            done = run_check(tmp / "out", tmp / f"{version}.pt", site, tmp / f"modules-{version}")
            if done.returncode:
                last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                results["versions"][version] = {"works": False, "error": last}
            else:
                got = torch.load(tmp / f"{version}.pt")
                assert got["version"] == version, got["version"]
                results["versions"][version] = {
                    "works": bool(torch.equal(got["generated"], reference["generated"])),
                    "max_abs_logit_diff": float((got["logits"] - reference["logits"]).abs().max())}
            print(version, results["versions"][version], flush=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
