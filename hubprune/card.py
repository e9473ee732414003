"""The model card of a pruned model folder: Hub metadata (huggingface_hub's `ModelCardData` with
`EvalResult`s) and a body rendered from a jinja2 template with the run's record and results.

`base_model_relation: finetune`. The Hub defines four relations (adapter, merge, quantized,
finetune). A pruned model is not an adapter (it stands alone), not a merge (one parent) and not a
quantization (same precision, a different, smaller architecture). `finetune` is the Hub's relation for
a standalone model whose weights derive from the base model's, which is what structured pruning makes
(FASP even refits some weights), so the model tree lists it under the base model's fine-tunes.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

from . import __version__, schema
from .errors import HubPruneError, InvalidOptionError

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
CARD_FILENAME = "README.md"
TRANSFORMERS_RANGE = ">=5.24,<6"
BASE_MODEL_RELATION = "finetune"

# Hub dataset ids of the perplexity corpora, for the model-index.
PPL_DATASETS = {"default": ("google/boolq", "BoolQ validation passages (embedded, held-out fifth)", None, "validation"),
                "wikitext2": ("wikitext", "WikiText-2", "wikitext-2-raw-v1", "test"),
                "c4": ("allenai/c4", "C4", "en", "validation"),
                "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "FineWeb-Edu", "sample-10BT", "train")}
TASK_DATASETS = {"arc_easy": ("allenai/ai2_arc", "ARC-Easy", "ARC-Easy"),
                 "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "ARC-Challenge"),
                 "hellaswag": ("Rowan/hellaswag", "HellaSwag", None), "piqa": ("baber/piqa", "PIQA", None),
                 "winogrande": ("allenai/winogrande", "WinoGrande", "winogrande_xl"),
                 "mmlu": ("cais/mmlu", "MMLU", "all")}


def _method_paper(method: str):
    """The paper a method declares (None for a method without one, or one this process does not know)."""
    from .errors import UnknownMethodError
    from .methods import get_method

    try:
        return get_method(method).paper
    except UnknownMethodError:
        return None


def read_front_matter(readme: Path) -> dict:
    """A card's YAML metadata ({} when there is no card or its metadata is unreadable)."""
    from huggingface_hub import metadata_load

    try:
        return (metadata_load(readme) if readme.is_file() else None) or {}
    except (yaml.YAMLError, ValueError, UnicodeDecodeError):
        return {}


def source_license(source_path: Path, reference: str) -> str | None:
    """The base model's license: its card's `license`, or the embedded model's."""
    from .embedded import DEFAULT_MODEL, DEFAULT_MODEL_LICENSE

    if reference == DEFAULT_MODEL:
        return DEFAULT_MODEL_LICENSE
    return read_front_matter(Path(source_path) / CARD_FILENAME).get("license")


# --- reproducing the run ------------------------------------------------------------------------------

def recipe(job: dict, repo_id: str | None = None) -> dict:
    """The `hubprune push --recipe` entry that repeats this run (`job`: hubprune.json's): the settings
    that differ from their defaults."""
    from .evaluation.settings import EvalSettings
    from .heal.settings import HealSettings
    from .job import PRUNE_KEYS_IN_PUSH, PruneJob

    entry = {"model": job["model"], "method": job["method"], "sparsity": job.get("sparsity"), "repo_id": repo_id}
    settings = {k: job[k] for k in PRUNE_KEYS_IN_PUSH if k in job and k not in entry
                and k not in ("options", "evaluation", "heal")}
    entry.update(schema.changed(PruneJob, settings))
    entry["source_revision"] = job.get("revision")  # in a recipe, `revision` is the branch pushed to
    entry["options"] = {k: v for k, v in job.get("options", {}).items() if v is not None}
    entry["evaluation"] = schema.changed(EvalSettings, job.get("evaluation", {}))
    entry["heal"] = schema.changed(HealSettings, job.get("heal", {}))
    return {k: v for k, v in entry.items() if v not in (None, [], {})}


def command(job: dict) -> str:
    """The `hubprune prune` command line of this run (the recipe's settings as flags)."""
    from .errors import UnknownMethodError
    from .evaluation.settings import EvalSettings
    from .heal.settings import HealSettings
    from .job import PruneJob
    from .methods import get_method

    entry = recipe(job)
    args = ["hubprune", "prune", entry.pop("model"), "--method", entry.pop("method")]
    options, evaluation, heal = entry.pop("options", {}), entry.pop("evaluation", {}), entry.pop("heal", {})
    if "source_revision" in entry:
        entry["revision"] = entry.pop("source_revision")
    args += schema.as_flags(PruneJob, entry)
    try:
        args += schema.as_flags(get_method(job["method"]).Options, options)
    except UnknownMethodError:  # a method this process does not know: its options by their names
        args += [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    args += schema.as_flags(EvalSettings, evaluation)
    args += schema.as_flags(HealSettings, heal)
    return " ".join(shlex.quote(a) for a in args) + " --output OUT"


# --- the card ---------------------------------------------------------------------------------------

def _load(folder: Path, name: str) -> dict | None:
    from .outputs import read_json_object

    file = folder / name
    return read_json_object(file, InvalidOptionError, "hubprune wrote it: prune again") if file.is_file() else None


def eval_results(results: dict | None) -> list:
    """model-index entries for the pruned model's numbers (perplexity, task accuracy)."""
    from huggingface_hub import EvalResult

    from .evaluation.report import published_role

    if not results:
        return []
    role = published_role(results)  # the numbers of the model published
    out = []
    for name, entry in results["perplexity"].items():
        if role not in entry:
            continue
        dataset, pretty, config, split = PPL_DATASETS.get(name, (name, name, None, entry["protocol"]["corpus"].get("split")))
        out.append(EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=pretty,
                              dataset_config=config, dataset_split=split,
                              dataset_revision=entry["protocol"]["corpus"].get("revision"),
                              metric_type="perplexity", metric_name=f"perplexity ({entry['protocol']['seq_len']}-token windows)",
                              metric_value=round(entry[role]["perplexity"], 4)))
    for name, entry in results["downstream"].items():
        if role not in entry or entry["protocol"]["limit"] is not None:  # --limit runs are checks, not results
            continue
        dataset, pretty, config = TASK_DATASETS.get(name, (name, name, None))
        source = entry["protocol"]["source"]
        out.append(EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=pretty,
                              dataset_config=config, dataset_split=entry["protocol"].get("split"),
                              metric_type="acc", metric_value=round(entry[role]["acc"], 4),
                              metric_name="accuracy (0-shot, lm-eval" + (", local files)" if source == "local" else ")")))
    return out


def render_card(folder: str | Path, *, repo_id: str | None = None, template: str | Path | None = None,
                revision: str | None = None):
    """The model card (huggingface_hub `ModelCard`) of a hubprune output folder, published to `repo_id`
    on branch `revision` [main]."""
    from huggingface_hub import ModelCard, ModelCardData

    from .evaluation.report import format_value, result_rows, roles_in, speed_summary
    from .info import model_info

    folder = Path(folder)
    record = _load(folder, "hubprune.json")
    if record is None:
        raise InvalidOptionError(f"{folder} is not a hubprune output (no hubprune.json)")
    results = _load(folder, "results.json") or record.get("evaluation")
    plan = _load(folder, "hubprune_plan.json") or {}
    template = Path(template) if template else TEMPLATE
    if not template.is_file():
        raise InvalidOptionError(f"--template {template}: no such file")
    job, source = record["job"], record["source"]
    method = job["method"]
    paper = _method_paper(method)
    base_model = source.get("repo_id")
    calibration = (record.get("method_report") or {}).get("calibration") or {}
    datasets = sorted({d for d in [calibration.get("source")] if d and "/" in d and not os.path.exists(d)})
    card_data = ModelCardData(
        model_name=repo_id or folder.name, base_model=base_model,
        base_model_relation=BASE_MODEL_RELATION if base_model else None,
        license=source.get("license") or "other", library_name="transformers", pipeline_tag="text-generation",
        tags=["pruned", "hubprune", method, "structured-pruning"], datasets=datasets or None,
        eval_results=eval_results(results) or None)
    info = model_info(str(folder))
    context = dict(
        repo_id=repo_id or folder.name, record=record, job=job, source=source, method=method, plan=plan,
        paper=paper, citation=paper.bibtex(method) if paper else None, info=info, blocks=info.get("blocks"),
        rows=result_rows(results) if results else [], roles=roles_in(results) if results else [],
        results=results, fmt=format_value, command=command(job), heal=record.get("heal"),
        heal_params=_heal_params(record.get("heal")),
        speed_note=speed_summary(results) if results else None,
        recipe=yaml.safe_dump({"jobs": [recipe(job, repo_id)]}, sort_keys=False).strip(),
        transformers_range=TRANSFORMERS_RANGE, hubprune_version=__version__,
        remote_code=(folder / "modeling_hubprune.py").is_file(),
        serving=_serving(folder, repo_id or folder.name, revision),
    )
    try:
        return ModelCard.from_template(card_data, template_path=str(template), **context)
    except Exception as exc:  # noqa: BLE001 - a user's template: say where it broke
        raise HubPruneError(f"cannot render the model card from {template}: {type(exc).__name__}: {exc}") from None


def _heal_params(heal: dict | None) -> str | None:
    if not heal:
        return None
    s = heal["settings"]
    what = (f"LoRA adapters of rank {s['lora_rank']} merged into the weights" if s["params"] == "lora"
            else "every weight of the blocks")
    return f"{what} ({heal['trainable_parameters']:,} parameters), learning rate {s['lr']:g}"


def _serving(folder: Path, repo_id: str, revision: str | None) -> list[dict]:
    """For each serving export in the folder: where it is, the commands that serve it, where it was tested."""
    from .serving import TESTED_IN, export_branch, exports_in

    found, out = exports_in(folder), []
    if "vllm" in found:
        branch = export_branch(revision)
        out.append({"format": "vLLM (native DeciLM model, no hubprune code)", "where": f"branch `{branch}`",
                    "commands": [f"vllm serve {repo_id} --revision {branch} --trust-remote-code"
                                 "  # the remote code: a config class"],
                    "tested": TESTED_IN["vllm"]})
    for name in found.get("gguf", []):
        stem = Path(name).stem
        out.append({"format": "GGUF (llama.cpp, architecture deci)", "where": f"`{name}`",
                    "commands": [f"llama-server --hf-repo {repo_id} --hf-file {name}",
                                 f"hf download {repo_id} {name} --local-dir .  # then, for Ollama (untested here):",
                                 f'echo "FROM ./{name}" > Modelfile && ollama create {stem.lower()} -f Modelfile'],
                    "tested": TESTED_IN["gguf"]})
    return out


def write_card(folder: str | Path, *, repo_id: str | None = None, template: str | Path | None = None,
               revision: str | None = None) -> Path:
    """Render the card into `folder`/README.md (atomically)."""
    card = render_card(folder, repo_id=repo_id, template=template, revision=revision)
    target = Path(folder) / CARD_FILENAME
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(str(card))
    os.replace(tmp, target)
    return target


def validate_card(folder: str | Path, endpoint: str | None = None) -> None:
    """The Hub's own check of the card's metadata (`ModelCard.validate`), against `endpoint`."""
    from huggingface_hub import ModelCard, constants

    card = ModelCard.load(Path(folder) / CARD_FILENAME)
    previous = constants.ENDPOINT
    constants.ENDPOINT = (endpoint or previous).rstrip("/")  # validate() posts to constants.ENDPOINT
    try:
        card.validate()
    except ValueError as exc:
        raise HubPruneError(f"the Hub rejects the model card's metadata: {exc}") from None
    finally:
        constants.ENDPOINT = previous
