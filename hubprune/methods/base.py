"""The method interface: a method turns (model, calibration data, options) into a `PrunePlan`.

Methods only decide; `surgery` applies. A method declares its options as a typed dataclass
(`Options`, fields made with `schema.setting`): the command line's flags, the recipe keys, the checks,
`hubprune methods NAME` and the card's "reproduce" command are all generated from it, so an option
the method does not take is an error and a new option is written in one place.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .. import schema
from ..errors import InvalidOptionError

if TYPE_CHECKING:  # keep `hubprune methods` free of torch/transformers imports
    import torch

    from ..loading import LoadedModel
    from ..plan import PrunePlan
    from ..runs import LayerTensors, RunFolder
    from ..sequential import DecoderStack


@dataclass(frozen=True)
class Paper:
    """Where a method comes from: shown by `hubprune methods NAME`, cited in the model card."""

    title: str
    arxiv: str  # e.g. "2501.17771"
    first_author: str  # "Surname, Given"
    venue: str | None = None

    @property
    def year(self) -> int:
        return 2000 + int(self.arxiv[:2])

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    def __str__(self) -> str:
        return f"{self.first_author.split(',')[0]} et al., {self.title} ({self.venue or self.year}), arXiv:{self.arxiv}"

    def bibtex(self, key: str) -> str:
        return (f"@article{{{key}{self.year},\n  title   = {{{self.title}}},\n  author  = {{{self.first_author} and "
                f"others}},\n  journal = {{arXiv preprint arXiv:{self.arxiv}}},\n  year    = {{{self.year}}}\n}}")


@dataclass
class Options:
    """A method's options; checked (types, bounds, choices, then `check`) when made."""

    def __post_init__(self) -> None:
        schema.check(self)
        self.check()

    def check(self) -> None:
        """Rules that tie options together (override)."""


# Options several methods share: one declaration each, defaults per method.
def calib_data() -> dataclasses.Field:
    return schema.setting("auto", metavar="NAME|FILE", group="calibration",
                          help="calibration text: c4 (the reference), default (embedded), wikitext2, or a .txt/.jsonl "
                               "file; auto: c4, or default for MODEL=default")


def calib_samples(default: int) -> dataclasses.Field:
    return schema.setting(default, minimum=1, metavar="N", group="calibration",
                          help="calibration windows of --seq-len tokens")


def ffn_multiple() -> dataclasses.Field:
    return schema.setting(8, minimum=1, metavar="M", group="calibration",
                          help="round kept FFN widths to a multiple of M; unaligned widths run slower on GPUs, "
                               "1 reproduces the paper exactly")


@dataclass
class CalibrationOptions(Options):
    calib_data: str = calib_data()
    calib_samples: int = calib_samples(256)


@dataclass(frozen=True)
class Calibration:
    """The calibration text a method needs. The pipeline prepares it once (before `select`, and not at
    all when a finished selection is resumed) and records where it came from in the method's report."""

    corpus: str  # a --calib-data value: "auto", a corpus name or a file
    count: int  # windows (or sequences)
    seq_len: int | None = None  # tokens in each; None: the job's --seq-len
    joined: bool = False  # whole documents joined into sequences, as EvoPress does, rather than cut into windows


@dataclass
class Selection:
    """What `select` returns: the plan and what the method measured and decided (budgets, scores,
    timings), recorded in hubprune.json as `method_report`. Weights a method refits are written to
    `PruneContext.restored` as it goes (in the run folder, so memory stays flat and a run resumes)."""

    plan: PrunePlan
    report: dict = field(default_factory=dict)


@dataclass
class PruneContext:
    """What a method may use to decide: the loaded model, the job's settings (`options` is the method's
    own `Options`, checked) and the calibration data it asked for (`windows`, [count, seq_len] token
    ids). A long search checkpoints to `run` (the job's run folder) so that an interrupted run resumes."""

    loaded: LoadedModel
    sparsity: float | None
    seed: int
    options: Options
    seq_len: int = 2048
    windows: torch.Tensor | None = None
    run: RunFolder | None = None
    restored: LayerTensors | None = None  # where a restoring method puts its refitted weights

    def stack(self) -> DecoderStack:
        """Block-by-block access to the model (streamed from its shards when loaded with offload)."""
        from ..sequential import DecoderStack

        return DecoderStack(self.loaded)


class PruningMethod(ABC):
    """A pruning method: one module in `hubprune/methods/`, registered with `@register`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line, shown by `hubprune methods`
    paper: ClassVar[Paper | None] = None
    takes_sparsity: ClassVar[bool] = True
    sparsity_means: ClassVar[str] = "of the decoder-layer parameters"  # what --sparsity is a fraction of
    Options: ClassVar[type[Options]] = Options  # this method's options (a dataclass of `schema.setting`s)
    # The plan keys (plan.PLAN_KEYS) its selections may use; checked against --export before pruning.
    # None: not declared, so an export is checked only once the plan exists.
    produces: ClassVar[frozenset[str] | None] = None

    def configure(self, given: dict) -> Options:
        """This method's options from a job's `options` (unset ones, None, take the defaults); an option
        it does not take is refused by its flag."""
        names = {f.name for f in schema.fields(self.Options)}
        unknown = sorted(k for k, v in given.items() if v is not None and k not in names)
        if unknown:
            raise InvalidOptionError(f"--{unknown[0].replace('_', '-')} does not apply to --method {self.name}")
        return self.Options(**{k: v for k, v in given.items() if v is not None})

    def calibration(self, options: Options, config) -> Calibration | None:
        """The calibration this method needs (None: none). By default the `calib_data` and `calib_samples`
        options' windows of --seq-len tokens, when the method has them."""
        if hasattr(options, "calib_data") and hasattr(options, "calib_samples"):
            return Calibration(options.calib_data, options.calib_samples)
        return None

    def plan_keys(self, options: Options) -> frozenset[str] | None:
        """The plan keys this run's selection may use (`produces`, unless the options decide)."""
        return self.produces

    def check_model(self, model, sparsity: float | None, options: Options) -> None:
        """Refuse what this model's shape makes impossible; `model` is weightless (meta device)."""

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None, options: Options) -> dict:
        """Bytes the selection needs beyond the model, estimated from the config before anything is
        loaded: "device" (activations and statistics where the work runs) and "disk" (spilled data).
        The pre-flight check adds them to the model's own needs. Override for each calibrating method."""
        return {}

    @abstractmethod
    def select(self, context: PruneContext) -> Selection:
        """Decide what to remove."""


def window_bytes(config, windows: int, seq_len: int, itemsize: int) -> int:
    """One hidden state [windows, seq_len, hidden] in the model dtype."""
    return int(windows) * seq_len * config.hidden_size * itemsize


def blocks_to_remove(sparsity: float, num_layers: int) -> int:
    """k = ceil(s·N), as the 2SSP reference (so the real rate is k/N); rounding guards against
    0.3*10 = 3.0000000000000004."""
    return math.ceil(round(sparsity * num_layers, 9))


class BlockBudgetMethod(PruningMethod):
    """A method whose budget is k = ceil(s·N) blocks' worth (whole blocks, or k attention + k MLPs)."""

    Options = CalibrationOptions

    def working_memory(self, config, itemsize: int, seq_len: int, sparsity: float | None, options) -> dict:
        """Every calibration window's state, two copies while a block runs (its input and its output)."""
        return {"device": 2 * window_bytes(config, options.calib_samples, seq_len, itemsize)}

    def check_model(self, model, sparsity: float | None, options) -> None:
        n = model.config.num_hidden_layers
        if blocks_to_remove(sparsity, n) > n - 1:
            raise InvalidOptionError(f"--sparsity {sparsity} would remove all {n} blocks of this model; "
                                     f"the most {self.name} can remove is {n - 1} (sparsity {(n - 1) / n:.3f})")
