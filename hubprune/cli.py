"""The `hubprune` command: a thin layer over `hubprune.pipeline` and friends."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap

from . import __version__, schema
from .distributed import ranks
from .errors import HubPruneError, InvalidOptionError
from .push import RECIPE_EXAMPLE
from .serving import FORMATS, VLLM_FOLDER

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


def _common(parser: argparse.ArgumentParser, groups: dict, *, output_help: str, push: bool = False) -> None:
    """MODEL, --token, --output and the model-and-device settings of `PruneJob`."""
    from .job import MODEL, PruneJob, PushSettings

    group = groups[MODEL] = parser.add_argument_group(MODEL)
    group.add_argument("model", metavar="MODEL", nargs="?" if push else None,
                       help="Hub repo id, local folder, .gguf file, or 'default'")
    group.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved `hf auth login`)")
    group.add_argument("--output", "-o", help=output_help)
    for f in schema.cli_fields(PruneJob):
        if f.metadata["group"] == MODEL and not (push and f.name == "revision"):  # push: --revision is the branch
            schema.add_argument(group, PruneJob, f)
    if push:
        schema.add_argument(group, PushSettings, next(f for f in schema.fields(PushSettings) if f.name == "source_revision"))


def _method_options() -> dict[str, list]:
    """Every method option by name: [(method, its Options class, the field)] for each method taking it."""
    from .methods import methods

    owners: dict[str, list] = {}
    for name, cls in methods().items():
        for f in schema.cli_fields(cls.Options):
            owners.setdefault(f.name, []).append((name, cls.Options, f))
    return owners


def _defaults_text(owners: list) -> str | None:
    """An option's defaults per method, e.g. "2ssp, fasp: 32; shortgpt, window, slicegpt: 256"."""
    if len(owners) == 1:
        return None
    by_default: dict[str, list[str]] = {}
    for method, _, f in owners:
        by_default.setdefault(f.metadata["default_text"] or str(schema.default(f)), []).append(method)
    if len(by_default) == 1:
        return next(iter(by_default))
    return "; ".join(f"{', '.join(methods)}: {value}" for value, methods in by_default.items())


def _prune_options(p: argparse.ArgumentParser, groups: dict) -> None:
    """The method, its options (generated from every method's `Options`) and evaluation (prune, push)."""
    from .job import METHOD, SERVING, PruneJob

    groups[METHOD] = p.add_argument_group(METHOD)
    groups["calibration"] = p.add_argument_group("calibration (calibrating methods)")
    schema.add_arguments(p, PruneJob, skip=tuple(f.name for f in schema.fields(PruneJob)
                                                 if f.metadata["group"] not in (METHOD, SERVING, None)), groups=groups)
    for name, owners in _method_options().items():
        _, options_class, f = owners[0]
        title = f.metadata["group"] or owners[0][0]
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        schema.add_argument(groups[title], options_class, f, unset=True, defaults=_defaults_text(owners))
    _eval_options(p, groups)
    _heal_options(p, groups)


def _heal_options(p: argparse.ArgumentParser, groups: dict) -> None:
    from .heal.settings import HealSettings

    schema.add_arguments(p, HealSettings, groups=groups)


def _eval_options(p: argparse.ArgumentParser, groups: dict) -> None:
    from .evaluation.settings import EvalSettings

    schema.add_arguments(p, EvalSettings, groups=groups)


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.settings import EvalSettings
    from .heal.settings import HealSettings
    from .job import PUBLISHING, PruneJob, PushSettings

    parser = _Parser(prog="hubprune", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hubprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("prune", help="prune a model and write a loadable model folder",
                       description="Prune MODEL with --method and write the result to --output. "
                                   "`hubprune methods NAME` lists a method's options with their defaults.",
                       epilog=PRUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict = {}
    _common(p, groups, output_help="output model folder (required)")
    _prune_options(p, groups)

    e = sub.add_parser("eval", help="evaluate a model (and its dense baseline): perplexity, tasks, speed",
                       description="Evaluate MODEL: perplexity on each corpus of --ppl (non-overlapping windows, no "
                                   "BOS), 0-shot --tasks through lm-eval, and --speed. For a hubprune output, the "
                                   "source model it was pruned from is evaluated in the same run as the dense "
                                   "baseline. Writes OUTPUT/results.json (schema: hubprune/evaluation/"
                                   "results.schema.json) when --output is given; an interrupted run resumes.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {}
    _common(e, groups, output_help="folder for results.json")
    e.add_argument("--baseline", default="auto", metavar="MODEL|auto|none",
                   help="dense model to compare with: auto = the source of a hubprune output [auto]")
    _eval_options(e, groups)

    u = sub.add_parser("push", help="prune, evaluate, write the model card and upload to the Hub, in one go",
                       description="The release job: prune MODEL with --method (or take the pruned folder "
                                   "--from-dir), evaluate dense vs pruned, render README.md (the model card) and "
                                   "upload the folder to --repo-id in one commit. Nothing is uploaded unless every "
                                   "step before succeeded; the token is checked before pruning starts. Without "
                                   "evaluation options it measures perplexity (wikitext2; the embedded corpus for "
                                   "MODEL=default) and speed.",
                       epilog=PUSH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {}
    _common(u, groups, output_help=next(f for f in schema.fields(PushSettings) if f.name == "output").metadata["help"],
            push=True)
    schema.add_arguments(u, PushSettings, skip=("source_revision",), groups=groups)
    publishing = groups[PUBLISHING]
    publishing.add_argument("--recipe", metavar="YAML", help="push every job of a recipe file (format below)")
    publishing.add_argument("--dry-run", action="store_true",
                            help="do everything but the upload, and list the files that would be uploaded")
    _prune_options(u, groups)

    h = sub.add_parser("heal", help="heal a pruned output: distil it from its dense source (knowledge distillation)",
                       description="Train the hubprune output DIR to match the dense model it was pruned from (the "
                                   "source in DIR/hubprune.json, or --teacher): forward KL on next-token distributions, "
                                   "LoRA merged back or all weights, as `prune --heal kd` does. Writes a new output "
                                   "folder with the healed weights, hubprune.json extended with the healing record, and "
                                   "with --ppl/--tasks a results.json of dense, pruned and healed measured in this run. "
                                   "An interrupted run resumes from the run folder next to --output.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("folder", metavar="DIR", help="a hubprune output folder (or Hub id)")
    h.add_argument("--output", "-o", required=True, help="the healed output folder")
    h.add_argument("--teacher", metavar="MODEL", help="dense model to distil from [the source DIR was pruned from]")
    h.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved `hf auth login`)")
    h.add_argument("--seed", type=int, help="random seed [the pruning run's]")
    h.add_argument("--seq-len", type=int, metavar="N", help="tokens per window [the pruning run's --seq-len]")
    for name in ("device", "overwrite", "trust_remote_code"):
        schema.add_argument(h, PruneJob, next(f for f in schema.fields(PruneJob) if f.name == name))
    groups = {}
    schema.add_arguments(h, HealSettings, skip=("method",), groups=groups)
    schema.add_arguments(h, EvalSettings, skip=("seq_len",), groups=groups)

    c = sub.add_parser("card", help="render a pruned folder's model card (README.md)",
                       description="Render DIR/README.md from the run's hubprune.json and results.json with the "
                                   "jinja2 template (Hub metadata with base_model, license, tags and model-index).")
    c.add_argument("folder", metavar="DIR", help="a hubprune output folder")
    c.add_argument("--repo-id", help="the repo it will be published as (used in the card's code snippets)")
    c.add_argument("--template", metavar="J2", help="jinja2 template [templates/model_card.md.j2]")
    c.add_argument("--validate", action="store_true", help="also have the Hub validate the metadata (needs network)")
    c.add_argument("--endpoint", help="Hub endpoint for --validate")

    x = sub.add_parser("export", help="write a pruned folder in a serving engine's own format (vllm, gguf)",
                       description="Write the hubprune output DIR in the format a serving engine reads natively. "
                                   "vllm: a folder in vLLM's DeciLM ('nemotron-nas') format, served by `vllm serve "
                                   "OUT --trust-remote-code` with no hubprune code (Llama, Mistral, Qwen2, Phi-3). "
                                   "gguf: one llama.cpp file, architecture deci (`llama-server -m OUT.gguf`; Llama, "
                                   "Mistral, Qwen2 and Phi-3 blocks; the tokenizer converted from tokenizer.json: "
                                   "byte-level BPE such as Llama 3's and Qwen2's, SentencePiece-style BPE such as "
                                   "Llama 2's). Not: value-pruned attention (FASP), sliced residuals (SliceGPT), OPT. "
                                   "Both give a first block without attention a zero attention.")
    x.add_argument("folder", metavar="DIR", help="a hubprune output folder")
    x.add_argument("--format", required=True, choices=FORMATS, help="the target format")
    x.add_argument("--output", "-o", required=True, help="the exported folder (vllm) or file (gguf: *.gguf)")
    schema.add_argument(x, PruneJob, next(f for f in schema.fields(PruneJob) if f.name == "gguf_dtype"))
    x.add_argument("--overwrite", action="store_true", help="replace an existing hubprune output")

    m = sub.add_parser("methods", help="list pruning methods; with NAME, its options and paper",
                       description="List the registered pruning methods, or show one method's options (flag, "
                                   "default, help) and its paper.")
    m.add_argument("name", metavar="NAME", nargs="?", help="a method to describe")

    i = sub.add_parser("info", help="architecture summary; per-layer structure of a pruned model",
                       description="Print MODEL's architecture and parameter count; for a hubprune model also "
                                   "its per-layer structure and the dense-vs-pruned parameter counts. Reads the config only.")
    i.add_argument("model", metavar="MODEL", help="Hub repo id, local folder, .gguf file, or 'default'")
    i.add_argument("--revision")
    i.add_argument("--token")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    schema.add_argument(i, PruneJob, next(f for f in schema.fields(PruneJob) if f.name == "trust_remote_code"))
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "methods":
        from .methods import get_method, methods

        if args.name:
            print(describe_method(get_method(args.name)))
        else:
            known = methods()
            width = max(map(len, known))
            for name, cls in known.items():
                print(f"{name:<{width}}  {cls.summary}")
    elif args.command == "info":
        from .references import check_model_reference

        check_model_reference(args.model)  # before torch is imported
        from .info import format_info, model_info

        info = model_info(args.model, revision=args.revision, token=args.token,
                          trust_remote_code=args.trust_remote_code)
        print(json.dumps(info, indent=1) if args.json else format_info(info))
    elif args.command == "prune":
        if not args.output:
            raise InvalidOptionError("prune needs --output DIR")
        if not args.method:
            raise InvalidOptionError("prune needs --method (see `hubprune methods`)")
        job = _job(args)
        job.validate()  # before torch is imported: a bad option is refused at once
        from .pipeline import run_job

        result = run_job(job, token=args.token)
        if ranks().main:  # over several processes (torchrun), one report
            record = result.record
            _print_summary(record)
            print(f"output: {result.output}  ({record['architecture']})")
    elif args.command == "push":
        _push(args)
    elif args.command == "heal":
        _heal(args)
    elif args.command == "export":
        from .serving import export

        path = export(args.folder, args.format, args.output, overwrite=args.overwrite, gguf_dtype=args.gguf_dtype)
        print(f"{args.format} export: {path}")
    elif args.command == "card":
        from .card import validate_card, write_card

        path = write_card(args.folder, repo_id=args.repo_id, template=args.template)
        if args.validate:
            validate_card(args.folder, args.endpoint)
        print(f"model card: {path}" + (" (validated by the Hub)" if args.validate else ""))
    elif args.command == "eval":
        from .evaluation.settings import EvalSettings
        from .references import check_model_reference

        settings = schema.build(EvalSettings, schema.from_args(EvalSettings, args), "eval")
        check_model_reference(args.model)
        settings.check_not_empty()
        settings.check_parallel()
        from .pipeline import evaluate

        results = evaluate(args.model, output=args.output, baseline=args.baseline, device=args.device,
                           dtype=args.dtype, revision=args.revision, token=args.token, seed=args.seed,
                           overwrite=args.overwrite, trust_remote_code=args.trust_remote_code,
                           **schema.from_args(EvalSettings, args))
        from .evaluation.report import format_results

        if ranks().main:  # over several processes (torchrun), one report
            print(format_results(results))
            if args.output:
                print(f"results: {args.output}/results.json")


def _heal(args: argparse.Namespace) -> None:
    from .evaluation.settings import EvalSettings
    from .heal.settings import HealSettings, heal_settings
    from .references import check_model_reference

    heal = {k: v for k, v in schema.from_args(HealSettings, args).items() if k != "method"}
    evaluation = {k: v for k, v in schema.from_args(EvalSettings, args).items() if k != "seq_len"}  # heal's own
    if args.seq_len is not None and args.seq_len < 2:
        raise InvalidOptionError(f"--seq-len {args.seq_len}: must be at least 2")
    heal_settings({"method": "kd", **heal}).check_not_evaluated(evaluation["ppl"])  # before torch is imported
    schema.build(EvalSettings, evaluation, "heal")
    check_model_reference(args.folder)
    if args.teacher:
        check_model_reference(args.teacher)
    from .heal.run import heal_output

    ppl, max_windows = evaluation.pop("ppl"), evaluation.pop("max_windows")
    result = heal_output(args.folder, output=args.output, heal=schema.changed(HealSettings, heal), teacher=args.teacher,
                         device=args.device, token=args.token, seed=args.seed, overwrite=args.overwrite,
                         trust_remote_code=args.trust_remote_code, ppl=ppl, seq_len=args.seq_len,
                         max_windows=max_windows, evaluation=schema.changed(EvalSettings, evaluation))
    _print_heal(result.record)
    print(f"output: {result.output}")


def _heal_line(heal: dict) -> str:
    """What healing did: tokens, time, the loss from the first to the last step."""
    return (f"healed with {heal['settings']['params']} on {heal['tokens']:,} tokens of {heal['data']['name']} in "
            f"{heal['seconds']:.0f} s: KD loss {heal['loss']['first']:.4f} -> {heal['loss']['last']:.4f}")


def _print_heal(record: dict) -> None:
    print(_heal_line(record["heal"]))
    if record.get("evaluation"):
        from .evaluation.report import format_results

        print(format_results(record["evaluation"]))


def _job_fields(args: argparse.Namespace) -> dict:
    """The `PruneJob` settings a prune / push command line gives (the method's options among them)."""
    from .evaluation.settings import EvalSettings
    from .heal.settings import HealSettings
    from .job import PruneJob

    fields = schema.from_args(PruneJob, args)
    fields["options"] = {name: getattr(args, name) for name in _method_options() if getattr(args, name) is not None}
    fields["evaluation"] = {k: v for k, v in schema.from_args(EvalSettings, args).items() if k not in fields}
    fields["heal"] = schema.changed(HealSettings, schema.from_args(HealSettings, args))
    return fields


def _job(args: argparse.Namespace):
    from .job import PruneJob

    return PruneJob(model=args.model, output=args.output, **_job_fields(args))


def describe_method(method) -> str:
    """`hubprune methods NAME`: what the method does, its paper and its options."""
    lines = [f"{method.name}: {method.summary}"]
    if method.paper:
        lines.append(f"paper: {method.paper} ({method.paper.url})")
    lines.append(f"--sparsity: {'a fraction ' + method.sparsity_means if method.takes_sparsity else 'not taken'}")
    options = schema.cli_fields(method.Options)
    lines.append("options:" if options else "options: none")
    for f in options:
        meta, value = f.metadata, schema.default(f)
        shown = meta["default_text"] or (None if value is None or isinstance(value, bool) else value)
        argument = "{" + ",".join(meta["choices"]) + "}" if meta["choices"] else meta["metavar"]
        argument = "" if isinstance(value, bool) else f" {argument or f.name.split('_')[-1].upper()}"
        lines.append(f"  {schema.flag(f)}{argument}" + (f"  [{shown}]" if shown is not None else ""))
        lines.extend(textwrap.wrap(f.metadata["help"], width=96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


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
    if record.get("heal"):
        print(_heal_line(record["heal"]))
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
    from .job import PushSettings
    from .push import push, push_recipe

    if args.recipe:
        results = push_recipe(args.recipe, token=args.token, dry_run=args.dry_run, announce=_announce)
    else:
        if not args.repo_id:
            raise InvalidOptionError("push needs --repo-id NAMESPACE/NAME (or --recipe FILE)")
        fields = _job_fields(args)
        for name in ("method", "overwrite", "revision"):  # push's --revision is the branch pushed to
            fields.pop(name, None)
        publishing = schema.from_args(PushSettings, args)
        publishing.pop("repo_id")
        results = [push(args.model, args.method, repo_id=args.repo_id, token=args.token, dry_run=args.dry_run,
                        overwrite=args.overwrite, announce=_announce, output=args.output, **publishing, **fields)]
    if not ranks().main:  # over several processes (torchrun), process 0 uploads and reports
        return
    for result in results:
        branches = [(result.published, result.folder), *((e, result.folder / VLLM_FOLDER) for e in result.exports)]
        for p, folder in branches:
            if p.dry_run:
                print(f"dry run: would upload {len(p.files)} files from {folder} to {p.url} (branch {p.revision}):")
                print("\n".join(f"  {f}" for f in p.files))
            elif p.changed:
                print(f"published {folder} to {p.url} (branch {p.revision}, commit {p.commit})")
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
        if not getattr(exc, "reported_by_process_0", False):
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
