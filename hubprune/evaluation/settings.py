"""What to evaluate (`EvalSettings`), in a module light enough to validate a command line before torch
is imported."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidOptionError
from .tasks import TASK_SOURCES

PPL_MODES = ("accurate", "reference")
RESULTS_FILENAME = "results.json"


@dataclass
class EvalSettings:
    """What to evaluate; every field is recorded with the results."""

    ppl: list[str] = field(default_factory=list)  # corpora
    ppl_mode: str = "accurate"
    seq_len: int = 2048
    max_windows: int | None = None
    tasks: list[str] = field(default_factory=list)  # lm-eval tasks (names or YAML paths)
    tasks_source: str = "auto"
    limit: float | None = None  # items per task: a count, or a fraction below 1
    batch_size: int = 1  # lm-eval batch size (the reference's 1)
    speed: bool = False
    speed_tokens: int | None = None  # prefill length [2048 on a GPU, 256 on a CPU]
    speed_batch: int | None = None  # the larger decode batch [16 on a GPU, 4 on a CPU]

    def __bool__(self) -> bool:
        return bool(self.ppl or self.tasks or self.speed)

    def validate(self) -> None:
        if self.ppl_mode not in PPL_MODES:
            raise InvalidOptionError(f"--ppl-mode {self.ppl_mode!r}: use {' or '.join(PPL_MODES)}")
        if self.tasks_source not in TASK_SOURCES:
            raise InvalidOptionError(f"--tasks-source {self.tasks_source!r}: use one of {', '.join(TASK_SOURCES)}")
        if self.limit is not None and self.limit <= 0:
            raise InvalidOptionError("--limit must be positive: a number of items, or a fraction below 1")
        for flag, value in (("--batch-size", self.batch_size), ("--speed-tokens", self.speed_tokens),
                            ("--speed-batch", self.speed_batch), ("--max-windows", self.max_windows)):
            if value is not None and value < 1:
                raise InvalidOptionError(f"{flag} must be at least 1")

    def check_not_empty(self) -> None:
        if not self:
            raise InvalidOptionError("nothing to evaluate: pass --ppl CORPORA, --tasks TASKS and/or --speed")

    def check_in_memory(self, streamed: bool) -> None:
        if streamed and (self.tasks or self.speed):
            raise InvalidOptionError("--tasks and --speed need the whole model in memory, and this one is streamed "
                                     "block by block (--offload, or it does not fit); drop them here and run "
                                     "`hubprune eval` on the output on a machine where it fits")
