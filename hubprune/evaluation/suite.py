"""One evaluation run: perplexity, downstream tasks and speed of a dense baseline and a pruned model,
with the protocol of every number, assembled into the results.json document (results.schema.json)."""
from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import __version__
from .perplexity import perplexity
from .report import ROLES
from .settings import EvalSettings
from .speed import SpeedSettings, measure_speed, timer_name
from .tasks import TASKS, ResolvedTask, choose_source, lm_eval_version, resolve_tasks, run_tasks

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")


def model_summary(loaded, reference: str) -> dict:
    from ..surgery import total_parameters

    return {"reference": reference, "repo_id": loaded.source.repo_id, "revision": loaded.source.revision,
            "parameters": total_parameters(loaded.model), "dtype": str(loaded.dtype).removeprefix("torch.")}


class Evaluation:
    """Evaluates models under one `EvalSettings`, one role at a time.

    Perplexities and task scores are kept in `run` (a `runs.RunFolder`) as they are made, so an
    interrupted run resumes without recomputing them. Speed is always measured afresh, so that the dense
    and pruned timings come from one process on one machine."""

    def __init__(self, settings: EvalSettings, *, run=None, seed: int = 0):
        self.settings, self.run, self.seed = settings, run, seed
        self.models: dict[str, dict] = {}
        self.parts: dict[str, dict] = {}
        self._task_folder: tempfile.TemporaryDirectory | None = None
        self._tasks: list[ResolvedTask] | None = None

    def _cached(self, name: str, make: Callable[[], dict]) -> dict:
        return make() if self.run is None else self.run.cached(name, make)

    def add(self, role: str, loaded, reference: str) -> dict:
        """Evaluate `loaded` as `role` (one of ROLES); returns its part of the results."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}")
        s = self.settings
        s.check_in_memory(loaded.shards is not None)
        s.check_parallel()
        self.models[role] = model_summary(loaded, reference)
        part = {"perplexity": {}, "downstream": {}}
        for index, corpus in enumerate(s.ppl):
            entry = self._cached(f"{role}-perplexity-{index}", lambda: self._perplexity(loaded, corpus, role))
            part["perplexity"][entry["name"]] = entry
        if s.tasks:
            tasks = self._resolved_tasks()
            scores = self._cached(f"{role}-downstream", lambda: run_tasks(
                loaded.model, _tokenizer(loaded), tasks, Path(self._task_folder.name), limit=s.limit,
                batch_size=s.batch_size, seed=self.seed))
            for task in tasks:
                part["downstream"][task.name] = {"protocol": self._task_protocol(task, scores[task.name]),
                                                 "result": scores[task.name]}
        if s.speed and role != "healed":
            settings = SpeedSettings.for_device(loaded.device, s.speed_tokens, s.speed_batch)
            result = measure_speed(loaded.model, settings, seed=self.seed, desc=f"{role} speed")
            result["parameters"] = self.models[role]["parameters"]
            part["speed"] = {"protocol": {**settings.to_dict(), "timer": timer_name(loaded.device),
                                          "device": str(loaded.device)}, "result": result}
        self.parts[role] = part
        return part

    def _perplexity(self, loaded, corpus_name: str, role: str) -> dict:
        from ..data import load_corpus, token_windows
        from ..sequential import DecoderStack, stack_perplexity

        s = self.settings
        corpus = load_corpus(corpus_name, "evaluation")
        windows = token_windows(_tokenizer(loaded), corpus, s.seq_len, s.max_windows)
        desc = f"{role} ppl {corpus.name}"
        if loaded.shards is None:
            result = perplexity(loaded.model, windows, mode=s.ppl_mode, desc=desc)
        else:
            result = stack_perplexity(DecoderStack(loaded), windows, mode=s.ppl_mode, desc=desc)
        protocol = {"corpus": corpus.provenance, "seq_len": s.seq_len, "stride": s.seq_len, "windows": result.windows,
                    "max_windows": s.max_windows, "mode": s.ppl_mode, "bos": False,
                    "loss": "fp32 logits, fp64 sum" if s.ppl_mode == "accurate" else "model-dtype logits, window means"}
        return {"name": corpus.name, "protocol": protocol,
                "result": {"perplexity": result.perplexity, "nll": result.nll, "tokens": result.tokens}}

    def _resolved_tasks(self) -> list[ResolvedTask]:
        s = self.settings
        if self._tasks is None:
            self._task_folder = tempfile.TemporaryDirectory(prefix="hubprune-tasks-")
            # `auto` is decided once and kept, so a resumed run scores its second model on the same data.
            builtin = any(t in TASKS for t in s.tasks)  # task files need no source (nor a probe of the Hub)
            source = self._cached("downstream-source", lambda: {
                "source": choose_source(s.tasks_source) if builtin else "file"})["source"]
            self._tasks = resolve_tasks(s.tasks, source, Path(self._task_folder.name))
        return self._tasks

    def _task_protocol(self, task: ResolvedTask, scores: dict) -> dict:
        return {"source": task.source, "lm_eval_task": task.lm_eval_name, **task.protocol, "num_fewshot": 0,
                "limit": self.settings.limit, "batch_size": self.settings.batch_size,
                "lm_eval_version": lm_eval_version(), "primary_metric": "acc",
                "metrics": [m for m in ("acc", "acc_norm") if m in scores]}  # acc_norm where the task has it

    def document(self, environment: dict) -> dict:
        """The results.json document of every role evaluated so far (validated)."""
        doc = {"schema_version": 1, "hubprune_version": __version__, "models": self.models,
               "perplexity": {}, "downstream": {}}
        for role, part in self.parts.items():
            for kind in ("perplexity", "downstream"):
                for name, entry in part[kind].items():
                    doc[kind].setdefault(name, {"protocol": entry["protocol"]})[role] = entry["result"]
            if "speed" in part:
                doc.setdefault("speed", {"protocol": part["speed"]["protocol"]})[role] = part["speed"]["result"]
        speed = doc.get("speed", {})
        if "dense" in speed and "pruned" in speed:
            dense, pruned = speed["dense"], speed["pruned"]
            speed["pruned_vs_dense"] = {
                "prefill_speedup": dense["prefill_ms"] / pruned["prefill_ms"],
                "decode_speedup": {b: pruned["decode_tokens_per_second"][b] / v
                                   for b, v in dense["decode_tokens_per_second"].items()},
                "parameter_ratio": pruned["parameters"] / dense["parameters"]}
        doc["environment"] = environment
        validate_results(doc)
        return doc

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc) -> None:
        if self._task_folder is not None:
            self._task_folder.cleanup()


def _tokenizer(loaded):
    from ..data import _require_tokenizer

    _require_tokenizer(loaded.tokenizer)
    return loaded.tokenizer


@lru_cache(maxsize=1)
def results_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def validate_results(doc: dict) -> None:
    """Raise jsonschema.ValidationError when `doc` does not follow results.schema.json."""
    import jsonschema

    jsonschema.validate(doc, results_schema())
