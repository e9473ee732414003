"""The teacher's side of distillation: the dense model's next-token distributions on the healing text,
computed once, block by block (so the dense model can be streamed like any calibration pass), and kept
in memory-mapped files in the run folder. Training then never needs the dense model: it and the student
are not on the device together, and a resumed run reads the same numbers back.

Kept per position: the log-probabilities (fp32, from fp32 logits) of the teacher's `k` most likely tokens
and their ids, or with k = 0 the whole vocabulary. EvoPress keeps its dense logits the same way
(`methods.compute.kl_fitness.DenseLogits`); both walk the stack with `sequential.final_states`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..data import calibration_windows
from ..embedded import DEFAULT_MODEL
from ..sequential import DecoderStack, final_states, token_chunk
from .settings import CALIBRATION_CORPUS, HealSettings

COMPLETE = "complete.json"
log = logging.getLogger("hubprune")


def healing_windows(heal: HealSettings, loaded, seq_len: int, seed: int) -> tuple[torch.Tensor, dict]:
    """The healing text: steps x batch windows of `loaded`'s tokenizer, and their provenance.
    'calibration' is what calibration reads: the embedded corpus for the default model, C4 otherwise."""
    corpus = heal.data
    if corpus == CALIBRATION_CORPUS:
        corpus = "default" if loaded.source.reference == DEFAULT_MODEL else "c4"
    return calibration_windows(loaded.tokenizer, corpus, heal.window(seq_len), heal.steps * heal.batch, seed)


class TeacherDistributions:
    """log p_teacher for every position of `windows` [count, seq]: `values` [count, seq, k] (fp32) and
    `indices` [count, seq, k] (int32; None when the whole vocabulary is kept)."""

    def __init__(self, folder: Path, windows: torch.Tensor, vocab: int, topk: int):
        self.folder = Path(folder)
        count, seq_len = windows.shape
        self.vocab = vocab
        self.k = vocab if topk == 0 or topk >= vocab else topk
        self.full = self.k == vocab
        self.shape = (count, seq_len, self.k)
        self.key = {"windows_sha": _digest(windows), "vocab": vocab, "k": self.k}
        marker = self.folder / COMPLETE
        done = marker.is_file() and json.loads(marker.read_text()).get("key") == self.key
        if not done:  # a partial or foreign file is never trusted
            for name in ("values.bin", "indices.bin", COMPLETE):
                (self.folder / name).unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        size = count * seq_len * self.k
        if not done:
            _check_space(self.folder, size * 4 * (1 if self.full else 2), count * seq_len)
        self.values = torch.from_file(str(self.folder / "values.bin"), shared=True, size=size,
                                      dtype=torch.float32).view(self.shape)
        self.indices = None if self.full else torch.from_file(
            str(self.folder / "indices.bin"), shared=True, size=size, dtype=torch.int32).view(self.shape)
        self.reused = done
        self.mass = json.loads(marker.read_text())["mass"] if done else None

    @property
    def nbytes(self) -> int:
        return self.values.numel() * 4 * (1 if self.full else 2)

    @torch.no_grad()
    def compute(self, stack: DecoderStack, windows: torch.Tensor, *, batch: int = 8, progress: bool = True) -> None:
        """Fill the files from the dense model (`stack`), unless a previous run already did."""
        if self.reused:
            return
        states = final_states(stack, windows, batch=batch, desc="teacher distributions", progress=progress)
        chunk = token_chunk(self.vocab)
        mass = torch.zeros((), dtype=torch.float64)
        for i, state in enumerate(states):
            for start in range(0, state.shape[1], chunk):
                logp = torch.log_softmax(stack.logits(state[0, start:start + chunk]), dim=-1)
                if self.full:
                    self.values[i, start:start + chunk] = logp.cpu()
                    mass += logp.shape[0]
                else:
                    top = logp.topk(self.k, dim=-1)  # sorted: ties resolved the same way every run
                    self.values[i, start:start + chunk] = top.values.cpu()
                    self.indices[i, start:start + chunk] = top.indices.to(torch.int32).cpu()
                    mass += top.values.exp().sum(dtype=torch.float64).cpu()
        self.mass = (mass / (self.shape[0] * self.shape[1])).item()
        (self.folder / COMPLETE).write_text(json.dumps({"key": self.key, "mass": self.mass}))

    def batch(self, rows: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-probabilities, token ids or None) of windows `rows`, on `device`."""
        values = self.values[rows].to(device)
        return values, None if self.indices is None else self.indices[rows].to(device=device, dtype=torch.int64)


def _check_space(folder: Path, nbytes: int, tokens: int) -> None:
    """Refuse a cache the disk cannot hold, and say the size of a large one before computing it."""
    import shutil

    from ..errors import InsufficientResourcesError

    free = shutil.disk_usage(folder).free
    if nbytes > 0.9 * free:
        raise InsufficientResourcesError(
            f"the teacher's distributions of {tokens:,} healing tokens need {nbytes / 1e9:.1f} GB in the run folder and "
            f"its disk has {free / 1e9:.1f} GB free: use a smaller --heal-topk, fewer --heal-steps or a shorter "
            "--heal-seq-len, or a run folder on a larger disk (--run-dir, or --output for `hubprune heal`)")
    if nbytes > 2**30:
        log.warning("the teacher's distributions take %.1f GB in %s (--heal-topk sets how many tokens are kept)",
                    nbytes / 1e9, folder)


def _digest(windows: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(windows.to(torch.int64).numpy().tobytes()).hexdigest()


def kd_loss(student_logits: torch.Tensor, teacher_logp: torch.Tensor, teacher_ids: torch.Tensor | None) -> torch.Tensor:
    """Mean per-token forward KL(p_teacher ‖ q_student), in fp32. With top-k ids, p_teacher is the
    teacher's distribution renormalised over its k tokens (exactly KL when k is the vocabulary)."""
    logq = torch.log_softmax(student_logits.float(), dim=-1)
    if teacher_ids is not None:
        logq = logq.gather(-1, teacher_ids)
        teacher_logp = torch.log_softmax(teacher_logp, dim=-1)  # renormalised over the kept tokens
    p = teacher_logp.exp()
    return (p * (teacher_logp - logq)).sum(-1).mean()
