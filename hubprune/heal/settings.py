"""What a healing run does (`HealSettings`), in a module light enough to check a command line before
torch is imported. Each field is a `schema.setting`: its flag, help and checks come from here."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import schema
from ..errors import InvalidOptionError

HEALING = "healing (knowledge distillation from the dense model)"
HEAL_METHODS = ("kd",)
HEAL_PARAMS = ("lora", "all")
SCHEDULES = ("cosine", "constant")
# The corpus the method calibrated on ('auto': the embedded corpus for the default model, C4 otherwise).
CALIBRATION_CORPUS = "calibration"
EVALUATION_ONLY = ("wikitext2", "fineweb-edu")  # corpora whose only split hubprune reads is the evaluation one


@dataclass
class HealSettings:
    """Every setting of a healing run; recorded in hubprune.json and the card."""

    method: str | None = schema.setting(
        None, flag="heal", choices=HEAL_METHODS, group=HEALING,
        help="after pruning, train the pruned model to match the dense one: kd = forward KL(dense ‖ pruned) on "
             "next-token distributions (temperature 1, fp32), with the dense logits computed once and cached")
    data: str = schema.setting(
        CALIBRATION_CORPUS, flag="heal-data", metavar="CORPUS", group=HEALING,
        help="training text: 'calibration' (what calibration reads: C4's train split, or for MODEL=default the "
             "embedded corpus' calibration part), default (that part), c4, or a .txt/.jsonl file; never evaluation "
             "text (wikitext2, fineweb-edu and the --ppl files are refused)")
    params: str = schema.setting(
        "lora", flag="heal-params", choices=HEAL_PARAMS, group=HEALING,
        help="what trains: lora (low-rank adapters on every linear layer of the blocks, through peft, merged into "
             "the weights at the end: same format and shapes) or all (every weight of the blocks and the final "
             "norm; embeddings and head stay)")
    steps: int = schema.setting(100, flag="heal-steps", minimum=1, metavar="N", group=HEALING,
                                help="optimizer steps; tokens = steps x batch x sequence length")
    batch: int = schema.setting(4, flag="heal-batch", minimum=1, metavar="B", group=HEALING,
                                help="windows per step")
    seq_len: int | None = schema.setting(None, flag="heal-seq-len", minimum=2, metavar="N", group=HEALING,
                                         default_text="--seq-len", help="tokens per training window")
    lr: float | None = schema.setting(None, flag="heal-lr", above=0, metavar="LR", group=HEALING,
                                      default_text="1e-3 for lora, 1e-4 for all", help="peak learning rate (AdamW)")
    schedule: str = schema.setting("cosine", flag="heal-schedule", choices=SCHEDULES, group=HEALING,
                                   help="learning rate after the warm-up: cosine decay to 10% of the peak, or constant")
    warmup: int | None = schema.setting(None, flag="heal-warmup", minimum=0, metavar="N", group=HEALING,
                                        default_text="10% of the steps", help="linear warm-up steps")
    topk: int = schema.setting(
        128, flag="heal-topk", minimum=0, metavar="K", group=HEALING,
        help="keep the dense model's K most likely next tokens per position (their log-probabilities, renormalised; "
             "the covered probability mass is reported); 0 keeps the whole vocabulary, exact but vocab x 4 bytes "
             "per token on disk")
    lora_rank: int = schema.setting(16, flag="heal-lora-rank", minimum=1, metavar="R", group=HEALING,
                                    help="LoRA rank")
    lora_alpha: float = schema.setting(32.0, flag="heal-lora-alpha", above=0, metavar="A", group=HEALING,
                                       help="LoRA alpha (the update is scaled by alpha / rank)")
    checkpointing: bool = schema.setting(
        False, flag="heal-gradient-checkpointing", group=HEALING,
        help="recompute each block's activations in the backward pass: much less memory, about a third more time")
    save_every: int = schema.setting(25, flag="heal-save-every", minimum=1, metavar="N", group=HEALING,
                                     help="steps between checkpoints in the run folder (what an interrupted run "
                                          "resumes from)")

    def __post_init__(self) -> None:
        schema.check(self)
        if self.data in EVALUATION_ONLY:
            raise InvalidOptionError(f"--heal-data {self.data}: hubprune reads only evaluation text from it; training "
                                     "on it would make the reported perplexity meaningless (use 'calibration', default, "
                                     "c4 or a file)")

    def __bool__(self) -> bool:
        return self.method is not None

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.params == "lora" else 1e-4)

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else self.steps // 10

    def check_not_evaluated(self, ppl: list[str]) -> None:
        """The healing text must not be one the perplexity is measured on."""
        if self.method and self.data in ppl and self.data != "default":
            raise InvalidOptionError(f"--heal-data {self.data} is also in --ppl: the healed perplexity would be "
                                     "measured on training text; choose other text for one of them")

    def window(self, seq_len: int) -> int:
        return self.seq_len or seq_len

    def check_given(self) -> None:
        """Healing options without --heal are a mistake, said at once."""
        if self.method is None:
            given = schema.changed(HealSettings, asdict(self))
            if given:
                f = next(f for f in schema.fields(HealSettings) if f.name in given)
                raise InvalidOptionError(f"{schema.flag(f)} is a healing setting: add --heal kd")


def heal_settings(values: dict | None, where: str = "heal") -> HealSettings:
    settings = schema.build(HealSettings, dict(values or {}), where)
    settings.check_given()
    return settings
