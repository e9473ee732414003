"""`hubprune heal DIR`: heal an existing hubprune output against its dense source, as `prune --heal`
does in one go. The teacher (the source recorded in DIR's hubprune.json, or --teacher) is loaded first,
evaluated, and its distributions are cached in the run folder; it is released before the student is
loaded, so the two are never on the device together. The result is a new output folder: DIR's files
with the healed weights, hubprune.json extended with the healing record, and a results.json with
dense, pruned and healed measured in this run."""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

from .. import __version__, schema
from ..distributed import check_parallel
from ..errors import InvalidOptionError
from ..evaluation.settings import RESULTS_FILENAME, EvalSettings
from ..evaluation.suite import Evaluation
from ..export import save_model_folder, write_json
from ..loading import load_model, resolve_model
from ..pipeline import PruneResult, baseline_reference, environment, in_memory, release_memory
from ..outputs import RECORD_FILENAME, OutputLock, atomic_folder, check_output, check_writable, recover
from ..plan import PLAN_FILENAME, PrunePlan
from ..privacy import public
from ..runs import RunFolder, default_run_dir
from ..sequential import DecoderStack
from ..serving import write_exports
from .settings import heal_settings
from .teacher import TeacherDistributions, healing_windows
from .train import Healer


def heal_output(pruned: str, *, output: str | Path, heal: dict, teacher: str | None = None, device: str = "auto",
                token: str | None = None, seed: int | None = None, overwrite: bool = False,
                trust_remote_code: bool = False, ppl: list[str] | None = None, seq_len: int | None = None,
                max_windows: int | None = None, evaluation: dict | None = None) -> PruneResult:
    """Heal the hubprune output `pruned` (a folder or a Hub id) into `output`; returns the output, its
    hubprune.json and the healed model in memory.

    `heal`: the HealSettings values (method 'kd' implied); `teacher`: the dense model [the recorded
    source]; `seed` and `seq_len` default to the pruning run's. Resumes from the run folder next to `output`."""
    settings = heal_settings({"method": "kd", **heal})
    check_parallel("heal", "pruning is parallel but healing is not yet")
    source = resolve_model(pruned, token=token, trust_remote_code=trust_remote_code)
    record_file = Path(source.path) / RECORD_FILENAME
    if not record_file.is_file():
        raise InvalidOptionError(f"{pruned} is not a hubprune output (no {RECORD_FILENAME}); heal prunes nothing: "
                                 "run `hubprune prune ... --heal kd` on a dense model")
    record = json.loads(record_file.read_text())
    if record.get("heal"):
        raise InvalidOptionError(f"{pruned} is already healed; heal the output it was made from, with more "
                                 "--heal-steps if it needs more")
    job = record["job"]
    seed = job.get("seed", 0) if seed is None else seed
    seq_len = seq_len or job.get("seq_len", 2048)
    if settings.seq_len is None:  # recorded, so that the card's command repeats these windows
        settings = replace(settings, seq_len=seq_len)
    eval_settings = schema.build(EvalSettings, {"ppl": list(ppl or []), "seq_len": seq_len, "max_windows": max_windows,
                                                **(evaluation or {})}, "evaluation")
    settings.check_not_evaluated(eval_settings.ppl)
    recorded = teacher is None
    teacher = teacher or baseline_reference(record, "auto", "--teacher")
    teacher_revision = record["source"].get("revision") if recorded else None
    output = Path(output)
    check_writable(output)
    key = {"pruned": pruned, "pruned_revision": source.revision, "teacher": teacher, "heal": asdict(settings),
           "evaluation": asdict(eval_settings), "seed": seed, "device": device, "hubprune": __version__}
    with OutputLock(output):
        recover(output)
        check_output(output, overwrite)
        with RunFolder(default_run_dir(output), key) as run, Evaluation(eval_settings, run=run, seed=seed) as evaluate:
            dense = load_model(teacher, device=device, dtype=job.get("dtype", "auto"), revision=teacher_revision,
                               token=token, offload=None, trust_remote_code=trust_remote_code)
            if eval_settings:
                evaluate.add("dense", dense, teacher)
            windows, data = healing_windows(settings, dense, seq_len, seed)
            distributions = TeacherDistributions(run.file("heal-teacher"), windows, dense.model.lm_head.out_features,
                                                 settings.topk)
            distributions.compute(DecoderStack(dense), windows)
            del dense
            release_memory()
            student = load_model(pruned, device=device, dtype=job.get("dtype", "auto"), token=token, offload=None)
            if student.shards is not None:
                raise InvalidOptionError(f"{pruned} does not fit whole in memory here, and healing trains it: run "
                                         "`hubprune heal` on a machine where it fits")
            if eval_settings:
                evaluate.add("pruned", student, str(pruned))
            healed, report = Healer(student.model, student.family, distributions, windows, settings,
                                    folder=run.file("heal"), seed=seed, device=student.device).run()
            student = in_memory(healed, student)
            if eval_settings:
                evaluate.add("healed", student, output.name)
            new = copy.deepcopy(record)
            new["job"]["heal"] = schema.changed(type(settings), asdict(settings))
            new["heal"] = {**report, "data": data, "healed_by": "hubprune heal", "teacher": teacher}
            new["environment"] = environment(student.device)
            new["evaluation"] = evaluate.document(new["environment"]) if eval_settings else record.get("evaluation")
            plan = PrunePlan.load(Path(source.path) / PLAN_FILENAME)
            with atomic_folder(output, overwrite) as folder:
                save_model_folder(folder, healed, student.tokenizer, plan=plan, record=new)
                if eval_settings:
                    write_json(folder / RESULTS_FILENAME, public(new["evaluation"]))
                write_exports(folder, job.get("export") or [], output.name, job.get("gguf_dtype", "float32"))
    return PruneResult(output, public(new), healed)
