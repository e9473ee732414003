"""`push`: the release job in one call (prune -> evaluate -> model card -> upload), and release recipes
(YAML files of push jobs, one repo per model x sparsity)."""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .card import CARD_FILENAME, validate_card, write_card
from . import schema
from .distributed import check_parallel, on_main, ranks
from .errors import HubPruneError, InvalidOptionError, OutputExistsError
from .hub import (
    PublishResult,
    check_replaceable,
    check_repo_id,
    check_transfer_protocol,
    hub_api,
    publish_folder,
    resolve_token,
    whoami,
)
from .privacy import public
from .serving import VLLM_FOLDER, export_branch
from .serving.vllm import CONFIG_CLASS_FILE

log = logging.getLogger("hubprune")


@dataclass
class PushResult:
    folder: Path
    published: PublishResult
    pruned: bool  # False when an existing output (or --from-dir) was published as it is
    exports: list[PublishResult] = field(default_factory=list)  # serving exports published to their own branch


def default_evaluation(model: str) -> dict:
    """What `push` measures when not told: perplexity on WikiText-2 (the embedded corpus for the
    embedded model, which works offline) and speed, dense vs pruned."""
    return {"ppl": ["default" if model == "default" else "wikitext2"], "evaluation": {"speed": True}}


def push(model: str | None = None, method: str | None = None, *, repo_id: str, token: str | None = None,
         dry_run: bool = False, overwrite: bool = False, announce: Callable[[Path], None] | None = None,
         **settings) -> PushResult:
    """Prune `model` with `method` (or take the pruned folder `from_dir`), evaluate it, write its model
    card and upload it to `repo_id`. `settings` are `PushSettings` fields (from_dir, output, private,
    revision = the branch pushed to, source_revision = the model's, ...) and `PruneJob` fields
    (sparsity, options, device, ppl, evaluation, ...). Nothing is uploaded unless every step before
    succeeded; the token is checked before any pruning starts. `announce(folder)` is called once the
    folder and its card are ready, before the upload (the CLI prints the pruning summary there)."""
    from .job import PruneJob, PushSettings

    check_repo_id(repo_id)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}  # output, from_dir, ...
    prune_keys = {f.name for f in schema.fields(PruneJob)} - {"model", "method", "output", "revision", "overwrite"}
    job_fields = {k: settings.pop(k) for k in prune_keys if k in settings}
    publishing = schema.build(PushSettings, {**settings, "repo_id": repo_id}, "push")
    job = None
    if publishing.from_dir is not None:
        folder = Path(publishing.from_dir)
        if not (folder / "hubprune.json").is_file():
            raise InvalidOptionError(f"--from-dir {folder}: not a hubprune output folder (no hubprune.json)")
        if job_fields.get("heal"):
            raise InvalidOptionError("--from-dir publishes a folder as it is: heal it first (`hubprune heal DIR "
                                     "--output HEALED`), then push --from-dir HEALED")
    else:
        if not model or not method:
            raise InvalidOptionError("push needs MODEL and --method (or --from-dir with an already pruned folder)")
        job_fields = {k: v for k, v in job_fields.items() if v is not None}
        evaluation = dict(job_fields.get("evaluation") or {})
        if publishing.no_eval:
            job_fields.update(ppl=[], evaluation={})
        elif not (job_fields.get("ppl") or evaluation.get("tasks") or evaluation.get("speed")):
            defaults = default_evaluation(model)
            job_fields.update(ppl=defaults["ppl"], evaluation={**evaluation, **defaults["evaluation"]})
        folder = Path(publishing.output) if publishing.output else Path(repo_id.split("/")[-1])
        job = PruneJob(model=model, method=method, output=str(folder), revision=publishing.source_revision,
                       overwrite=overwrite, **job_fields)
        job.validate()  # options first: offline and instant
    if ranks().distributed:  # under torchrun the processes prune together
        if job is None:
            check_parallel("push --from-dir", "only pruning is parallel")
        from .loading import resolve_device

        resolve_device(job.device)  # joins the process group
    # The endpoint, the token and the export branch before any pruning (a dry run too: it is everything
    # but the upload). Over several processes (torchrun) process 0 talks to the Hub; they all prune.
    def check_remote() -> None:
        check_transfer_protocol(publishing.endpoint)
        api = hub_api(resolve_token(token), publishing.endpoint)
        whoami(api)
        if (job is not None and "vllm" in job.export) or (job is None and (folder / VLLM_FOLDER).is_dir()):
            check_replaceable(api, repo_id, export_branch(publishing.revision), CONFIG_CLASS_FILE.name)

    on_main(check_remote)
    pruned = False
    if job is not None:
        if _same_job(folder, job) and not overwrite:
            log.warning("%s already holds this pruning job's result; publishing it as it is", folder)
        else:
            if folder.exists() and not overwrite:
                raise OutputExistsError(f"{folder} exists and holds another result; pass --overwrite or another --output")
            from .pipeline import run_job

            run_job(job, token=token)
            pruned = True

    def publish() -> PushResult:
        write_card(folder, repo_id=repo_id, template=publishing.template, revision=publishing.revision)
        if not dry_run:
            validate_card(folder, publishing.endpoint)
        if announce is not None:
            announce(folder)
        vllm = folder / VLLM_FOLDER
        published = publish_folder(folder, repo_id, token=token, private=publishing.private,
                                   revision=publishing.revision, commit_message=publishing.commit_message,
                                   endpoint=publishing.endpoint, dry_run=dry_run, ignore=[f"{VLLM_FOLDER}/*"])
        exports = []
        if (vllm / "config.json").is_file():  # its own branch, with the same card
            shutil.copy(folder / CARD_FILENAME, vllm / CARD_FILENAME)
            exports.append(publish_folder(vllm, repo_id, token=token, revision=export_branch(publishing.revision),
                                          commit_message=publishing.commit_message, endpoint=publishing.endpoint,
                                          dry_run=dry_run, replace=CONFIG_CLASS_FILE.name))
        return PushResult(folder, published, pruned, exports)

    return on_main(publish)


def _same_job(folder: Path, job) -> bool:
    record = folder / "hubprune.json"
    if not record.is_file():
        return False
    saved = json.loads(record.read_text()).get("job_key")
    return saved is not None and saved == json.loads(json.dumps(public(job.resume_key()), default=str))


# --- recipes --------------------------------------------------------------------------------------------

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
    evaluation: {tasks: [arc_easy, piqa], speed: true}
    heal: {method: kd, steps: 200}        # optional: distil from the dense model after pruning"""


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
    """Every key a setting of a push job, every value of its type (each `sparsity` of a list too), and
    `options` the method's own."""
    from .job import PRUNE_KEYS_IN_PUSH, PruneJob, PushSettings
    from .methods import get_method

    if not isinstance(entry, dict):
        raise InvalidOptionError(f"{where}: must be a mapping")
    owners = {**{k: PruneJob for k in PRUNE_KEYS_IN_PUSH}, **{f.name: PushSettings for f in schema.fields(PushSettings)}}
    for key, value in entry.items():
        if key not in owners:
            raise InvalidOptionError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(owners))})")
        field = next(f for f in schema.fields(owners[key]) if f.name == key)
        values = value if key == "sparsity" and isinstance(value, list) else [value]
        try:
            for item in values:
                schema.check_value(owners[key], field, item, where=key)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"{where}: {exc}") from None
    if entry.get("method") and entry.get("options"):
        try:
            get_method(entry["method"]).configure(entry["options"])
        except HubPruneError as exc:
            raise InvalidOptionError(f"{where}: options: {exc}") from None


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
    return job


def push_recipe(path: str | Path, *, token: str | None = None, dry_run: bool = False,
                announce: Callable[[Path], None] | None = None) -> list[PushResult]:
    jobs = load_recipe(path)  # all of them validated before the first one runs
    return [push(job.pop("model", None), job.pop("method", None), token=token, dry_run=dry_run, announce=announce,
                 **job) for job in jobs]
