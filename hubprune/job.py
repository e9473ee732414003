"""The settings of hubprune's jobs, declared once: `PruneJob` (a prune run), `PushSettings` (what
`push` and a recipe add: where and how to publish) and, in `evaluation.settings`, `EvalSettings`.
Every field is a `schema.setting`; the command-line flags, the recipe keys and their checks, the card's
"reproduce this" command and recipe, and hubprune.json's `job` block are all generated from them.
Nothing here imports torch, so a bad setting is refused at once."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from . import schema
from .distributed import check_parallel
from .errors import InvalidOptionError
from .evaluation.settings import EvalSettings
from .heal.settings import HealSettings, heal_settings
from .methods import get_method
from .references import check_model_reference
from .serving import GGUF_DTYPES, check_formats, check_job

MODEL, METHOD, PUBLISHING, SERVING = "model and device", "method", "publishing", "serving exports"


def _like(cls: type, name: str) -> dataclasses.Field:
    """A field declared as `cls`'s field `name` (one declaration, two owners)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
    return dataclasses.field(default=f.default, metadata=f.metadata)


@dataclass
class PruneJob:
    """Every setting of a prune run; recorded in the output's hubprune.json (local paths by their names,
    see `privacy.public`)."""

    model: str = schema.setting(help="Hub repo id, local folder, .gguf file, or 'default'", cli=False)
    method: str = schema.setting(help="pruning method (see `hubprune methods`)", group=METHOD)
    output: str = schema.setting(help="output model folder", cli=False)
    sparsity: float | None = schema.setting(
        None, group=METHOD,
        help="fraction of decoder-layer parameters to remove, in (0, 1) (slicegpt: the fraction of the hidden width "
             "sliced away, which removes fewer parameters; both are reported)")
    options: dict = schema.setting(default_factory=dict, cli=False,
                                   help="the method's options (its own flags; `hubprune methods NAME` lists them)")
    device: str = schema.setting("auto", group=MODEL, help="cuda, cuda:N, cpu or auto (cuda when present)")
    dtype: str = schema.setting("auto", choices=("auto", "float32", "bfloat16", "float16"), group=MODEL,
                                help="weights dtype; auto = the checkpoint's; scores and losses are fp32 regardless")
    seed: int = schema.setting(0, group=MODEL, help="random seed")
    revision: str | None = schema.setting(None, metavar="REV", group=MODEL,
                                          help="MODEL's Hub branch, tag or commit [main]")
    ppl: list[str] = _like(EvalSettings, "ppl")
    seq_len: int = _like(EvalSettings, "seq_len")
    max_windows: int | None = _like(EvalSettings, "max_windows")
    offload: bool | None = schema.setting(
        None, group=METHOD,
        help="never load the whole model: stream one block at a time from the safetensors shards (peak memory about "
             "one block plus embeddings and activations). Without it, this happens only when the model does not fit "
             "in memory")
    overwrite: bool = schema.setting(False, group=MODEL, help="replace an existing hubprune output")
    run_dir: str | None = schema.setting(
        None, metavar="DIR", group=METHOD, default_text=".OUTPUT.hubprune-run next to --output",
        help="where finished steps (dense evaluation, selection, search checkpoints) are kept, so that the same "
             "command resumes after an interruption; deleted on success")
    evaluation: dict = schema.setting(default_factory=dict, cli=False,
                                      help="evaluation settings beyond ppl / seq_len / max_windows (EvalSettings)")
    export: list[str] = schema.setting(
        default_factory=list, convert=check_formats, metavar="FORMATS", group=SERVING,
        help="also write the result in serving engines' own formats, comma-separated: vllm (OUTPUT/vllm/, vLLM's "
             "DeciLM format; push: the repo's `vllm` branch) and gguf (OUTPUT/NAME-F32.gguf for llama.cpp; push: beside "
             "the weights). A method whose result no format carries is refused before pruning (docs/format.md)")
    gguf_dtype: str = schema.setting(
        "float32", choices=tuple(GGUF_DTYPES), group=SERVING,
        help="weights type of the gguf export; norms stay float32. q8_0: llama.cpp's 8-bit blocks of 32 (a matrix "
             "whose rows are not whole blocks, e.g. an unaligned FFN width, stays float16)")
    heal: dict = schema.setting(default_factory=dict, cli=False,
                                help="healing after pruning (HealSettings: method, steps, ...); empty: no healing")
    trust_remote_code: bool = schema.setting(
        False, group=MODEL,
        help="let a model that ships its own Python code (auto_map) run it; read that code first. Never needed for "
             "hubprune outputs, which load with hubprune's own classes")

    def __post_init__(self) -> None:
        schema.check(self)

    def eval_settings(self) -> EvalSettings:
        return schema.build(EvalSettings, {"ppl": self.ppl, "seq_len": self.seq_len, "max_windows": self.max_windows,
                                           **self.evaluation}, "evaluation")

    def heal_settings(self) -> HealSettings:
        return heal_settings(self.heal)

    def resume_key(self) -> dict:
        """The settings a run folder's saved steps depend on (not where the output goes)."""
        key = {k: v for k, v in asdict(self).items() if k not in ("output", "overwrite", "run_dir")}
        plan = self.options.get("plan")
        if plan and Path(plan).is_file():  # an edited plan file is a different job
            key["plan_sha256"] = hashlib.sha256(Path(plan).read_bytes()).hexdigest()
        return key

    def validate(self) -> None:
        """Everything that can be checked without the model: the reference, the method and its options,
        the sparsity, the evaluation settings."""
        check_model_reference(self.model)
        method = get_method(self.method)
        if self.sparsity is not None and not 0 < self.sparsity < 1:
            raise InvalidOptionError(f"--sparsity {self.sparsity}: must be a fraction strictly between 0 and 1, e.g. 0.3")
        if method.takes_sparsity and self.sparsity is None:
            raise InvalidOptionError(f"--method {self.method} needs --sparsity (a fraction between 0 and 1)")
        if not method.takes_sparsity and self.sparsity is not None:
            raise InvalidOptionError(f"--method {self.method} takes no --sparsity: {method.summary}")
        options = method.configure(self.options)
        check_job(self.export, self.method, method.plan_keys(options))
        self.eval_settings().check_parallel()
        heal = self.heal_settings()
        if heal:
            check_parallel("--heal", "pruning is parallel but healing is not yet: prune with torchrun, then run "
                                     "`hubprune heal` on the output in one process")
        heal.check_not_evaluated(self.ppl)
        if heal and self.offload:
            raise InvalidOptionError("--heal trains the pruned model, which needs it whole in memory: drop --offload "
                                     "(or prune with --offload, then run `hubprune heal` where the output fits)")


@dataclass
class PushSettings:
    """What `push` adds to a prune job: where and how the result is published (a recipe entry is a
    `PruneJob` plus these, with `revision` meaning the branch pushed to)."""

    repo_id: str | None = schema.setting(None, group=PUBLISHING, help="target repo, NAMESPACE/NAME (created if missing)")
    source_revision: str | None = schema.setting(None, metavar="REV", group=MODEL,
                                                 help="MODEL's Hub branch, tag or commit [main]")
    private: bool = schema.setting(False, group=PUBLISHING, help="create the repo private")
    revision: str | None = schema.setting(None, group=PUBLISHING, help="branch to push to (created if missing) [main]")
    commit_message: str | None = schema.setting(None, group=PUBLISHING, help="[Upload NAME with hubprune]")
    endpoint: str | None = schema.setting(None, group=PUBLISHING, help="Hub endpoint [HF_ENDPOINT or https://huggingface.co]")
    from_dir: str | None = schema.setting(None, metavar="DIR", group=PUBLISHING,
                                          help="publish this already pruned output folder (no pruning)")
    template: str | None = schema.setting(None, metavar="J2", group=PUBLISHING,
                                          help="jinja2 model card template [templates/model_card.md.j2]")
    no_eval: bool = schema.setting(False, group=PUBLISHING, help="publish without evaluating")
    output: str | None = schema.setting(
        None, group=MODEL, cli=False,
        help="where the pruned folder is written [./NAME of --repo-id]; reused when it already holds this job's result")

    def __post_init__(self) -> None:
        schema.check(self)


# A recipe entry: the fields of a push job (PruneJob's `revision` is PushSettings' `source_revision`).
PRUNE_KEYS_IN_PUSH = tuple(f.name for f in schema.fields(PruneJob) if f.name not in ("output", "revision", "overwrite",
                                                                                       "run_dir"))
