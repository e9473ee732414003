"""A prune job's settings (`PruneJob`), validated without importing torch, so that a bad option is
refused at once."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .embedded import DEFAULT_MODEL
from .errors import InvalidOptionError, ModelNotFoundError
from .evaluation.settings import EvalSettings
from .methods import get_method


def check_model_reference(reference: str) -> Path | None:
    """The local model folder or .gguf file `reference` names (None for a Hub repo id or the embedded
    default); a reference that can only be a local path but names nothing there is refused."""
    if reference == DEFAULT_MODEL:
        return None
    local = Path(reference).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} is a folder but holds no config.json; point to a model folder")
        return local
    if reference.startswith((".", "/", "~")) or reference.count("/") > 1 or local.is_file():
        raise ModelNotFoundError(f"no such model folder or .gguf file: {reference}")
    return None


@dataclass
class PruneJob:
    """Every setting of a prune run; recorded in the output's hubprune.json (local paths by their names,
    see `privacy.public`)."""

    model: str
    method: str
    output: str
    sparsity: float | None = None
    options: dict = field(default_factory=dict)  # method-specific options
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    revision: str | None = None
    ppl: list[str] = field(default_factory=list)  # corpora to evaluate dense and pruned on
    seq_len: int = 2048
    max_windows: int | None = None
    offload: bool | None = None  # stream blocks from the shards: True always, None when the model does not fit
    overwrite: bool = False
    run_dir: str | None = None  # where finished steps are kept for resuming [next to the output]
    evaluation: dict = field(default_factory=dict)  # EvalSettings beyond ppl/seq_len/max_windows
    trust_remote_code: bool = False  # let the source model's own Python code run (never needed for our outputs)

    def eval_settings(self) -> EvalSettings:
        return EvalSettings(ppl=self.ppl, seq_len=self.seq_len, max_windows=self.max_windows, **self.evaluation)

    def resume_key(self) -> dict:
        """The settings a run folder's saved steps depend on (not where the output goes)."""
        key = {k: v for k, v in asdict(self).items() if k not in ("output", "overwrite", "run_dir")}
        plan = self.options.get("plan")
        if plan and Path(plan).is_file():  # an edited plan file is a different job
            key["plan_sha256"] = hashlib.sha256(Path(plan).read_bytes()).hexdigest()
        return key

    def validate(self) -> None:
        check_model_reference(self.model)
        method = get_method(self.method)
        if self.sparsity is not None and not 0 < self.sparsity < 1:
            raise InvalidOptionError(f"--sparsity {self.sparsity}: must be a fraction strictly between 0 and 1, e.g. 0.3")
        if method.takes_sparsity and self.sparsity is None:
            raise InvalidOptionError(f"--method {self.method} needs --sparsity (a fraction between 0 and 1)")
        if not method.takes_sparsity and self.sparsity is not None:
            raise InvalidOptionError(f"--method {self.method} takes no --sparsity: {method.summary}")
        unknown = sorted(k for k, v in self.options.items() if v is not None and k not in method.options)
        if unknown:
            raise InvalidOptionError(f"--{unknown[0].replace('_', '-')} does not apply to --method {self.method}")
        method.check_options(self.options)
        if self.seq_len < 2:
            raise InvalidOptionError("--seq-len must be at least 2")
        try:
            self.eval_settings().validate()
        except TypeError as exc:
            raise InvalidOptionError(f"unknown evaluation option: {exc}") from None
