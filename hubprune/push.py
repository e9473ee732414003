"""`push`: the release job in one call (prune -> evaluate -> model card -> upload), and release recipes
(YAML files of push jobs, one repo per model x sparsity)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .card import validate_card, write_card
from .errors import InvalidOptionError, OutputExistsError
from .hub import PublishResult, check_repo_id, check_transfer_protocol, hub_api, publish_folder, resolve_token, whoami
from .privacy import public

log = logging.getLogger("hubprune")


@dataclass
class PushResult:
    folder: Path
    published: PublishResult
    pruned: bool  # False when an existing output (or --from-dir) was published as it is


def default_evaluation(model: str) -> dict:
    """What `push` measures when not told: perplexity on WikiText-2 (the embedded corpus for the
    embedded model, which works offline) and speed, dense vs pruned."""
    return {"ppl": ["default" if model == "default" else "wikitext2"], "evaluation": {"speed": True}}


def push(model: str | None = None, method: str | None = None, *, repo_id: str, from_dir: str | Path | None = None,
         output: str | Path | None = None, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, endpoint: str | None = None, token: str | None = None,
         evaluate: bool = True, dry_run: bool = False, template: str | Path | None = None, overwrite: bool = False,
         source_revision: str | None = None, announce: Callable[[Path], None] | None = None,
         **prune_kwargs) -> PushResult:
    """Prune `model` with `method` (or take the pruned folder `from_dir`), evaluate it, write its model
    card and upload it to `repo_id` on branch `revision` (`source_revision` is the model's). `prune_kwargs` go to `pipeline.prune` (sparsity, options, device,
    ppl, evaluation, ...). Nothing is uploaded unless every step before succeeded; the token is checked
    before any pruning starts. `announce(folder)` is called once the folder and its card are ready, before
    the upload (the CLI prints the pruning summary and the dense-vs-pruned table there)."""
    from .job import PruneJob

    check_repo_id(repo_id)
    job = None
    if from_dir is not None:
        folder = Path(from_dir)
        if not (folder / "hubprune.json").is_file():
            raise InvalidOptionError(f"--from-dir {folder}: not a hubprune output folder (no hubprune.json)")
    else:
        if not model or not method:
            raise InvalidOptionError("push needs MODEL and --method (or --from-dir with an already pruned folder)")
        evaluation = dict(prune_kwargs.get("evaluation") or {})
        if not evaluate:
            prune_kwargs.update(ppl=[], evaluation={})
        elif not (prune_kwargs.get("ppl") or evaluation.get("tasks") or evaluation.get("speed")):
            defaults = default_evaluation(model)
            prune_kwargs.update(ppl=defaults["ppl"], evaluation={**evaluation, **defaults["evaluation"]})
        folder = Path(output) if output else Path(repo_id.split("/")[-1])
        prune_kwargs["revision"] = source_revision
        job = PruneJob(model=model, method=method, output=str(folder), **_job_fields(prune_kwargs))
        job.validate()  # options first: offline and instant
    # The endpoint and token before any pruning (a dry run too: it is everything but the upload).
    check_transfer_protocol(endpoint)
    whoami(hub_api(resolve_token(token), endpoint))
    pruned = False
    if job is not None:
        if _same_job(folder, job) and not overwrite:
            log.warning("%s already holds this pruning job's result; publishing it as it is", folder)
        else:
            if folder.exists() and not overwrite:
                raise OutputExistsError(f"{folder} exists and holds another result; pass --overwrite or another --output")
            from .pipeline import prune

            prune(model, method, output=folder, overwrite=overwrite, **prune_kwargs)
            pruned = True
    write_card(folder, repo_id=repo_id, template=template)
    if not dry_run:
        validate_card(folder, endpoint)
    if announce is not None:
        announce(folder)
    published = publish_folder(folder, repo_id, token=token, private=private, revision=revision,
                               commit_message=commit_message, endpoint=endpoint, dry_run=dry_run)
    return PushResult(folder, published, pruned)


_JOB_FIELDS = ("sparsity", "options", "device", "dtype", "seed", "revision", "ppl", "seq_len", "max_windows",
               "offload", "evaluation", "trust_remote_code")


def _job_fields(kwargs: dict) -> dict:
    fields = {k: kwargs[k] for k in _JOB_FIELDS if kwargs.get(k) is not None}
    fields["options"] = dict(fields.get("options") or {})
    fields["ppl"] = list(fields.get("ppl") or [])
    fields["evaluation"] = dict(fields.get("evaluation") or {})
    return fields


def _same_job(folder: Path, job) -> bool:
    record = folder / "hubprune.json"
    if not record.is_file():
        return False
    saved = json.loads(record.read_text()).get("job_key")
    return saved is not None and saved == json.loads(json.dumps(public(job.resume_key()), default=str))


# --- recipes --------------------------------------------------------------------------------------------

RECIPE_KEYS = {
    "model": str, "method": str, "sparsity": (float, int, list), "repo_id": str, "options": dict, "ppl": list,
    "evaluation": dict, "device": str, "dtype": str, "seed": int, "source_revision": str, "revision": str,
    "seq_len": int, "max_windows": int, "offload": bool, "private": bool, "commit_message": str,
    "output": str, "from_dir": str, "no_eval": bool, "template": str, "endpoint": str, "trust_remote_code": bool,
}
REQUIRED = ("repo_id",)
RECIPE_EXAMPLE = """\
defaults: {device: cuda, dtype: bfloat16, private: true}   # optional, for every job
jobs:
  - model: meta-llama/Llama-2-7b-hf
    method: fasp
    sparsity: [0.2, 0.3]                  # a list: one repo per value
    repo_id: me/Llama-2-7b-fasp{sparsity_pct}
    options: {calib_samples: 128}
    ppl: [wikitext2]
    evaluation: {tasks: [arc_easy, piqa], speed: true}"""


def load_recipe(path: str | Path) -> list[dict]:
    """The push jobs of a recipe file (format: RECIPE_EXAMPLE), each a dict of `push` keyword arguments."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidOptionError(f"--recipe {path}: no such file") from None
    except yaml.YAMLError as exc:
        raise InvalidOptionError(f"--recipe {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise InvalidOptionError(f"--recipe {path}: needs a non-empty `jobs:` list (and optional `defaults:`)")
    unknown_top = set(data) - {"defaults", "jobs"}
    if unknown_top:
        raise InvalidOptionError(f"--recipe {path}: unknown top-level key {sorted(unknown_top)[0]!r} "
                                 "(allowed: defaults, jobs)")
    defaults = data.get("defaults") or {}
    _check_entry(defaults, f"{path}: defaults")
    jobs = []
    for index, entry in enumerate(data["jobs"]):
        where = f"{path}: jobs[{index}]"
        if not isinstance(entry, dict):
            raise InvalidOptionError(f"{where}: each job is a mapping of options")
        merged = {**defaults, **entry}
        _check_entry(merged, where)
        for key in REQUIRED:
            if key not in merged:
                raise InvalidOptionError(f"{where}: missing {key!r}")
        sparsities = merged.get("sparsity")
        if isinstance(sparsities, list):
            if "{sparsity_pct}" not in merged["repo_id"] and "{sparsity}" not in merged["repo_id"]:
                raise InvalidOptionError(f"{where}: sparsity is a list, so repo_id needs {{sparsity_pct}} (or "
                                         "{sparsity}) to give each result its own repo")
            for value in sparsities:
                jobs.append(_expand({**merged, "sparsity": value}, where))
        else:
            jobs.append(_expand(merged, where))
    repos = [j["repo_id"] for j in jobs]
    duplicate = next((r for r in repos if repos.count(r) > 1), None)
    if duplicate:
        raise InvalidOptionError(f"--recipe {path}: two jobs publish to {duplicate}")
    return jobs


def _check_entry(entry: dict, where: str) -> None:
    if not isinstance(entry, dict):
        raise InvalidOptionError(f"{where}: must be a mapping")
    for key, value in entry.items():
        if key not in RECIPE_KEYS:
            raise InvalidOptionError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(RECIPE_KEYS))})")
        kind = RECIPE_KEYS[key]
        if value is not None and not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidOptionError(f"{where}: {key} has the wrong type ({type(value).__name__})")


def _expand(job: dict, where: str) -> dict:
    job = dict(job)
    sparsity = job.get("sparsity")
    if sparsity is not None:
        if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool):
            raise InvalidOptionError(f"{where}: sparsity values must be numbers")
        job["repo_id"] = job["repo_id"].format(sparsity_pct=f"{100 * sparsity:g}", sparsity=f"{sparsity:g}",
                                               method=job.get("method", ""))
    else:
        job["repo_id"] = job["repo_id"].format(method=job.get("method", ""))
    job["evaluate"] = not job.pop("no_eval", False)
    return job


def push_recipe(path: str | Path, *, token: str | None = None, dry_run: bool = False,
                announce: Callable[[Path], None] | None = None) -> list[PushResult]:
    jobs = load_recipe(path)  # all of them validated before the first one runs
    return [push(job.pop("model", None), job.pop("method", None), token=token, dry_run=dry_run, announce=announce,
                 **job) for job in jobs]
