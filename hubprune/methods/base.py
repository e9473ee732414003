"""The method interface: a method turns (model, calibration data, options) into a `PrunePlan`.

Methods only decide; `surgery` applies. A method declares the options it takes; any other option is
an error, so a typo or an option the method would ignore never passes silently.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep `hubprune methods` free of torch/transformers imports
    from ..loading import LoadedModel
    from ..plan import PrunePlan
    from ..runs import LayerTensors, RunFolder
    from ..sequential import DecoderStack


@dataclass
class PruneContext:
    """What a method may use to decide: the loaded model and the job's settings. A method writes what
    it measured and decided (budgets, scores, timings) to `report`; it is recorded in hubprune.json.
    A long search checkpoints to `run` (the job's run folder) so that an interrupted run resumes."""

    loaded: LoadedModel
    sparsity: float | None
    seed: int
    options: dict = field(default_factory=dict)
    seq_len: int = 2048
    report: dict = field(default_factory=dict)
    run: RunFolder | None = None
    restored: LayerTensors | None = None  # where a restoring method puts its refitted weights

    def corpus(self, name: str) -> str:
        """The calibration corpus `name` means: `auto` is the reference's C4, except for the embedded
        default model, whose corpus works offline."""
        if name == "auto":
            return "default" if self.loaded.source.reference == "default" else "c4"
        return name

    def calibration(self, name: str, count: int):
        """`count` calibration windows of `seq_len` tokens and their provenance (see `corpus`)."""
        from ..data import calibration_windows

        return calibration_windows(self.loaded.tokenizer, self.corpus(name), self.seq_len, count, self.seed)

    def stack(self) -> DecoderStack:
        """Block-by-block access to the model (streamed from its shards when loaded with offload)."""
        from ..sequential import DecoderStack

        return DecoderStack(self.loaded)


class PruningMethod(ABC):
    name: str = ""
    summary: str = ""  # one line, shown by `hubprune methods`
    paper: str | None = None
    takes_sparsity: bool = True
    sparsity_means: str = "of the decoder-layer parameters"  # what --sparsity is a fraction of (record, card)
    options: tuple[str, ...] = ()  # method-specific option names (CLI flags without the leading --)
    defaults: dict = {}  # option -> default, for the options that have one

    def with_defaults(self, options: dict) -> dict:
        """This method's options from the job, unset ones filled with the defaults."""
        return {**self.defaults, **{k: v for k, v in options.items() if k in self.options and v is not None}}

    def check_options(self, options: dict) -> None:
        """Refuse missing or malformed options before any model is loaded (override as needed)."""

    def check_model(self, model, sparsity: float | None, options: dict) -> None:
        """Refuse what this model's shape makes impossible; `model` is weightless (meta device)."""

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None, options: dict) -> dict:
        """Bytes the selection needs beyond the model, estimated from the config before anything is
        loaded: "device" (activations and statistics where the work runs) and "disk" (spilled data).
        The pre-flight check adds them to the model's own needs. Override for each calibrating method."""
        return {}


def window_bytes(config, windows: int, seq_len: int, itemsize: int) -> int:
    """One hidden state [windows, seq_len, hidden] in the model dtype."""
    return int(windows) * seq_len * config.hidden_size * itemsize

    @abstractmethod
    def select(self, context: PruneContext) -> PrunePlan:
        """Decide what to remove."""
