"""The jobs behind the CLI, as a library: `prune` (load -> select -> apply -> evaluate -> save) and
`evaluate` (a model and its dense baseline: perplexity, tasks, speed). The CLI is a thin layer over these functions."""
from __future__ import annotations

import contextlib
import gc
import json
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers

from . import __version__, schema
from .card import source_license
from .data import calibration_windows, joined_sequences
from .distributed import on_main, ranks
from .embedded import DEFAULT_MODEL
from .errors import HubPruneError, InvalidOptionError
from .evaluation.settings import RESULTS_FILENAME, EvalSettings
from .evaluation.suite import Evaluation
from .heal.teacher import TeacherDistributions, healing_windows
from .heal.train import Healer
from .job import PruneJob
from .export import (
    save_companions,
    save_model_folder,
    save_streamed_weights,
    source_shard_size,
    write_json,
)
from .loading import LoadedModel, load_model, resolve_device
from .modeling import OWN_CLASSES
from .outputs import RECORD_FILENAME, OutputLock, atomic_folder, check_output, check_writable, recover
from .methods import Calibration, PruneContext, get_method
from .plan import BoundPlan, PrunePlan
from .privacy import public
from .runs import LayerTensors, RunFolder, default_run_dir
from .sequential import DecoderStack, ShardReader
from .serving import check_source, check_tokenizer, write_exports
from .surgery import apply_plan, bind_plan, decoder_parameters, model_class, pruned_config, total_parameters

SPARSITY_DEFINITION = "removed fraction of decoder-layer parameters (embeddings, lm_head and final norm excluded)"


@dataclass
class PruneResult:
    output: Path
    record: dict
    model: torch.nn.Module | None = None  # the pruned model in memory (None when it was streamed to disk)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def environment(device: torch.device) -> dict:
    env = {"hubprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    if ranks().distributed:  # one process per device: the numbers came from all of them
        env["processes"] = ranks().world
    return env


def prune(model: str, method: str = "manual", *, output: str | Path, token: str | None = None,
          loaded: LoadedModel | None = None, **settings) -> PruneResult:
    """Prune `model` with `method` and write the result to `output` (atomically). `settings` are the
    other `PruneJob` fields (sparsity, options, device, dtype, seed, ppl, seq_len, evaluation, offload,
    run_dir, ...; None means the default).

    Finished steps are kept in the run folder (`runs.RunFolder`, default next to the output), so running
    the same job again after an interruption resumes; it is deleted when the output is written. With
    `offload`, the model is never loaded whole: calibration, export and evaluation stream one block at a
    time from the safetensors shards (None: only when the model does not fit in memory).
    `evaluation` holds further `EvalSettings` (tasks, speed, ppl_mode, ...): the dense model and the pruned
    one are evaluated with them in this run, and the results go to hubprune.json and results.json.
    `loaded` lets a caller that already holds the model (tests, notebooks) skip loading it again."""
    settings = {k: str(v) if k == "run_dir" else v for k, v in settings.items() if v is not None}
    job = schema.build(PruneJob, {"model": model, "method": method, "output": str(output), **settings}, "prune()")
    return run_job(job, token=token, loaded=loaded)


def run_job(job: PruneJob, *, token: str | None = None, loaded: LoadedModel | None = None) -> PruneResult:
    """Run a prune job (what `prune` and the CLI do): validate it, take the output's lock, prune. Over
    several processes (torchrun) process 0 takes the lock and writes; they all compute."""
    job.validate()
    output = Path(job.output)
    resolve_device(job.device if loaded is None else str(loaded.device))  # under torchrun: joins the others
    with contextlib.ExitStack() as held:
        def claim() -> None:
            check_writable(output)
            held.enter_context(OutputLock(output))  # one run per output; refused at once while another holds it
            recover(output)  # what a killed run on this output left behind
            check_output(output, job.overwrite)  # refuse before any expensive work

        on_main(claim)
        return _prune(job, token=token, loaded=loaded)


def _prune(job: PruneJob, *, token: str | None, loaded: LoadedModel | None) -> PruneResult:
    model, method, sparsity, seed, seq_len = job.model, job.method, job.sparsity, job.seed, job.seq_len
    output, overwrite, run_dir = Path(job.output), job.overwrite, job.run_dir
    seed_everything(seed)
    method_impl = get_method(method)
    options = method_impl.configure(job.options)
    if loaded is None:
        def check(skeleton) -> None:  # before any weight is read
            if skeleton.config.model_type in OWN_CLASSES:
                raise InvalidOptionError(
                    f"{model} was already pruned by hubprune; pruning its pruned format again is not supported: "
                    "prune its source model instead, with the total sparsity you want")
            method_impl.check_model(skeleton, sparsity, options)
            check_source(job.export, skeleton.config.to_dict())

        loaded = load_model(model, device=job.device, dtype=job.dtype, revision=job.revision, token=token,
                            output=output, offload=job.offload, check=check, trust_remote_code=job.trust_remote_code,
                            working_memory=lambda config, dtype: method_impl.working_memory(
                                config, dtype.itemsize, seq_len, sparsity, options))
    else:  # a caller's model: its config was not checked on the way in
        check_source(job.export, loaded.model.config.to_dict())
    check_tokenizer(job.export, loaded.tokenizer, model)
    dense = loaded.model
    settings = job.eval_settings()
    settings.check_in_memory(loaded.shards is not None)
    heal = job.heal_settings()
    if heal and loaded.shards is not None:
        raise InvalidOptionError("--heal trains the pruned model, which needs it whole in memory, and this model is "
                                 "streamed block by block (it does not fit): prune without --heal, then run "
                                 "`hubprune heal` on the output on a machine where it fits")
    key = {"job": job.resume_key(), "source_revision": loaded.source.revision, "hubprune": __version__}
    with RunFolder(run_dir or default_run_dir(output), key) as run, Evaluation(settings, run=run, seed=seed) as evaluation:
        reused = run.steps()
        if settings:  # before pruning: the speed of the dense model is measured while it is intact
            evaluation.add("dense", loaded, str(model))

        teacher = heal_data = None
        if heal:  # from the intact dense model, before any method touches it; kept in the run folder
            heal_windows, heal_data = healing_windows(heal, loaded, seq_len, seed)
            teacher = TeacherDistributions(run.file("heal-teacher"), heal_windows, dense.lm_head.out_features, heal.topk)
            teacher.compute(DecoderStack(loaded), heal_windows)

        restored = LayerTensors(run.file("restored"))
        fresh: dict = {}

        def select() -> dict:
            started = time.perf_counter()
            need = method_impl.calibration(options, dense.config)
            windows, provenance = prepare_calibration(need, loaded, seq_len, seed) if need else (None, None)
            context = PruneContext(loaded, sparsity, seed, options, seq_len=seq_len, windows=windows, run=run,
                                   restored=restored)
            selection = method_impl.select(context)
            fresh["bound"] = bind_plan(selection.plan, dense.config, loaded.family)  # checked before it is kept
            report = {**selection.report, **({"calibration": provenance} if provenance else {})}
            return {"plan": fresh["bound"].plan.to_dict(), "report": report, "seconds": time.perf_counter() - started}

        selection = run.cached("selection", select)
        bound = fresh.get("bound") or bind_plan(PrunePlan.from_dict(selection["plan"]), dense.config, loaded.family)
        method_report, select_seconds = selection["report"], selection["seconds"]
        refitted = restored if restored else None  # weights a method refitted, by layer
        dense_counts = {"total": total_parameters(dense), "decoder": decoder_parameters(dense)}
        summary = {"hubprune_version": __version__, "method": method, "source": loaded.source.repo_id or public(model),
                   "source_revision": loaded.source.revision, "sparsity_requested": sparsity,
                   "sparsity_requested_means": method_impl.sparsity_means}
        record = {
            "hubprune_version": __version__,
            "job": {**asdict(job), "output": output.name, "run_dir": run_dir and Path(run_dir).name},
            "job_key": key["job"],  # what `push` compares to tell whether a folder holds a job's result
            "source": {"reference": loaded.source.reference, "repo_id": loaded.source.repo_id,
                       "revision": loaded.source.revision, "model_type": dense.config.model_type,
                       "dtype": str(loaded.dtype).removeprefix("torch."),
                       "tied_embeddings": bool(dense.config.tie_word_embeddings),
                       "license": source_license(loaded.source.path, model)},
            "streamed_block_by_block": loaded.shards is not None,
            "resumed_steps": reused,
            "method_report": method_report,
            "environment": environment(loaded.device),
        }

        def complete(pruned_loaded: LoadedModel, apply_seconds: float) -> LoadedModel:
            """Counts, evaluation and timings of the pruned model into `record` (and the config's summary);
            with --heal, the model healed and evaluated again. Returns the model to write."""
            pruned_model = pruned_loaded.model
            pruned_counts = {"total": total_parameters(pruned_model), "decoder": decoder_parameters(pruned_model)}
            achieved = 1 - pruned_counts["decoder"] / dense_counts["decoder"]
            summary.update(sparsity_achieved=round(achieved, 6), parameters_dense=dense_counts["total"],
                           parameters_pruned=pruned_counts["total"])
            if settings:
                evaluation.add("pruned", pruned_loaded, output.name)
            if heal:
                healed, report = Healer(pruned_model, loaded.family, teacher, heal_windows, heal, folder=run.file("heal"),
                                        seed=seed, device=loaded.device).run()
                pruned_loaded = in_memory(healed, loaded)
                record["heal"] = {**report, "data": heal_data}
                if settings:
                    evaluation.add("healed", pruned_loaded, output.name)
            record.update(
                architecture="hubprune remote code" if getattr(pruned_model.config, "auto_map", None) else "stock transformers",
                sparsity={"definition": SPARSITY_DEFINITION, "requested": sparsity,
                          "requested_means": method_impl.sparsity_means, "achieved": achieved},
                parameters={"dense": dense_counts, "pruned": pruned_counts},
                timing_seconds={"select": select_seconds, "apply": apply_seconds, "prune": select_seconds + apply_seconds},
                evaluation=evaluation.document(record["environment"]) if settings else None,
            )
            return pruned_loaded

        shard_size = source_shard_size(loaded.source.path)
        pruned = None
        if loaded.shards is None:
            started = time.perf_counter()
            pruned = apply_plan(dense, bound, overrides=refitted)
            pruned = complete(in_memory(pruned, loaded), time.perf_counter() - started).model
            pruned.config.hubprune = summary

            def write() -> None:
                with atomic_folder(output, overwrite) as folder:
                    save_model_folder(folder, pruned, loaded.tokenizer, plan=bound.plan, record=record,
                                      max_shard_size=shard_size)
                    _save_results_and_exports(folder, record, job)

            on_main(write)
        else:
            with contextlib.ExitStack() as written:
                started = time.perf_counter()

                def write_weights() -> Path:  # into the folder that becomes the output when all is done
                    folder = written.enter_context(atomic_folder(output, overwrite))
                    _write_streamed_weights(folder, loaded, bound, shard_size, refitted)
                    return folder

                folder = on_main(write_weights)  # every process evaluates the written weights
                pruned_loaded = _streamed_output(folder, loaded, bound)
                complete(pruned_loaded, time.perf_counter() - started)
                pruned_loaded.model.config.hubprune = summary

                def write_rest() -> None:
                    pruned_loaded.model.config.save_pretrained(folder)
                    save_companions(folder, pruned_loaded.model.config, loaded.tokenizer, plan=bound.plan, record=record)
                    _save_results_and_exports(folder, record, job)

                on_main(write_rest)
    return PruneResult(output, public(record), pruned)


def prepare_calibration(need: Calibration, loaded: LoadedModel, seq_len: int, seed: int) -> tuple[torch.Tensor, dict]:
    """The calibration data a method asked for, and its provenance. `auto` is the reference's C4, except
    for the embedded default model, whose corpus works offline."""
    corpus = need.corpus
    if corpus == "auto":
        corpus = "default" if loaded.source.reference == DEFAULT_MODEL else "c4"
    if need.joined:
        return joined_sequences(loaded.tokenizer, corpus, need.seq_len or seq_len, need.count)
    return calibration_windows(loaded.tokenizer, corpus, need.seq_len or seq_len, need.count, seed)


def _save_results_and_exports(folder: Path, record: dict, job: PruneJob) -> None:
    """What follows the model files in the output being written: results.json and the serving exports."""
    if record["evaluation"]:
        write_json(folder / RESULTS_FILENAME, public(record["evaluation"]))
    write_exports(folder, job.export, Path(job.output).name, job.gguf_dtype)


def in_memory(model, like: LoadedModel) -> LoadedModel:
    """`model`, held in memory, as a loaded model with `like`'s tokenizer, family, source and device."""
    return LoadedModel(model, like.tokenizer, like.family, like.source, like.device, like.dtype)


def _write_streamed_weights(folder: Path, loaded: LoadedModel, bound: BoundPlan, shard_size: int | None,
                            restored: LayerTensors | None) -> None:
    """Write the pruned weights from the source shards."""
    save_streamed_weights(folder, loaded, bound, max_shard_size=shard_size, overrides=restored)
    if (loaded.source.path / "generation_config.json").is_file():
        shutil.copy(loaded.source.path / "generation_config.json", folder)


def _streamed_output(folder: Path, loaded: LoadedModel, bound: BoundPlan) -> LoadedModel:
    """The pruned weights written in `folder`, as a streamable model."""
    config = pruned_config(loaded.model.config, bound, loaded.family)
    with torch.device("meta"):
        skeleton = model_class(config)._from_config(config, dtype=loaded.dtype).eval()
    return LoadedModel(skeleton, loaded.tokenizer, loaded.family, loaded.source, loaded.device, loaded.dtype,
                       shards=ShardReader(folder))


def evaluate(model: str, *, ppl: list[str] | None = None, output: str | Path | None = None,
             baseline: str | None = "auto", device: str = "auto", dtype: str = "auto", revision: str | None = None,
             token: str | None = None, seq_len: int = 2048, max_windows: int | None = None, seed: int = 0,
             overwrite: bool = False, trust_remote_code: bool = False, **options) -> dict:
    """Evaluate `model` (a Hub id, a local or pruned folder) and its dense baseline in one run; returns the
    results.json document, also written to `output`/results.json when `output` is given.

    `baseline`: 'auto' evaluates the source model recorded in a hubprune output's hubprune.json as
    'dense' (nothing for a model that is not a hubprune output), 'none' skips it, anything else names the
    model to compare with. `options` are the other `EvalSettings` (tasks, speed, ppl_mode, limit, ...).
    `trust_remote_code` lets the models' own Python code run (hubprune outputs never need it).
    With `output`, finished parts are kept in a run folder next to it, so the same call resumes."""
    settings = schema.build(EvalSettings, {"ppl": list(ppl or []), "seq_len": seq_len, "max_windows": max_windows,
                                           **options}, "evaluate()")
    settings.check_not_empty()
    settings.check_parallel()
    results_path = Path(output) / RESULTS_FILENAME if output else None
    if results_path is not None and results_path.exists() and not overwrite:
        raise InvalidOptionError(f"{results_path} already exists; pass --overwrite to replace it")
    record = _hubprune_record(model, revision, token, trust_remote_code)
    dense_reference = baseline_reference(record, baseline)
    roles = [("dense", dense_reference, None)] if dense_reference else []
    roles.append(("pruned" if record else "dense", model, revision))
    key = {"model": model, "revision": revision, "baseline": roles[0][1], "settings": asdict(settings),
           "dtype": dtype, "seed": seed, "hubprune": __version__}
    if results_path is not None:
        check_writable(results_path)
    here = ranks()  # over several processes (torchrun), process 0 alone locks and writes
    lock = OutputLock(results_path.parent) if results_path and here.main else contextlib.nullcontext()
    seed_everything(seed)
    with lock, contextlib.ExitStack() as stack:
        run = stack.enter_context(RunFolder(default_run_dir(results_path.parent), key)) if results_path else None
        evaluation = stack.enter_context(Evaluation(settings, run=run, seed=seed))
        for role, reference, rev in roles:
            if role == "dense" and record:  # the source at the revision it was pruned from
                rev = record["source"].get("revision") if reference == record["source"]["reference"] else None
            try:
                loaded = load_model(reference, device=device, dtype=dtype, revision=rev, token=token, offload=None,
                                    trust_remote_code=trust_remote_code)
            except HubPruneError as exc:
                if role == "dense" and record:
                    raise type(exc)(f"{exc} (it is the baseline {model} was pruned from; --baseline none skips it, "
                                    "--baseline MODEL names another)") from None
                raise
            evaluation.add(role, loaded, reference)
            environment_info = environment(loaded.device)
            del loaded
            release_memory()
        results = evaluation.document(environment_info)
        if results_path is not None and here.main:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(results_path, results)
    return results


def _hubprune_record(model: str, revision: str | None, token: str | None, trust_remote_code: bool) -> dict | None:
    """The hubprune.json of `model` when it is a hubprune output (local folder or cached Hub repo)."""
    from .loading import resolve_model

    try:
        path = resolve_model(model, revision=revision, token=token, trust_remote_code=trust_remote_code).path
    except HubPruneError:
        return None  # load_model reports the problem with its own message
    file = Path(path) / RECORD_FILENAME
    return json.loads(file.read_text()) if file.is_file() else None


def baseline_reference(record: dict | None, baseline: str | None, flag: str = "--baseline") -> str | None:
    """The dense model to compare with (or distil from): `baseline`, or with 'auto' the source recorded
    in a hubprune output's `record`."""
    if baseline in (None, "none"):
        return None
    if baseline != "auto":
        return baseline
    if not record:
        return None
    source = record["source"]
    if not source.get("repo_id") and source.get("reference") != DEFAULT_MODEL:
        raise InvalidOptionError(f"this model was pruned from the local model {source.get('reference')!r}, whose path "
                                 f"is not recorded (outputs name no local paths): pass {flag} PATH"
                                 + (", or --baseline none" if flag == "--baseline" else ""))
    return source["reference"]


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["RECORD_FILENAME", "RESULTS_FILENAME", "PruneJob", "PruneResult", "evaluate", "prune", "run_job"]
