"""Healing by knowledge distillation: the pruned model (student) learns the dense model's next-token
distributions (`teacher.TeacherDistributions`) on the healing text.

- What trains: LoRA adapters (peft) on every linear layer of the blocks, merged into the weights at the
  end so the output keeps its format and shapes, or every weight but the embeddings and the head.
- Numerics: fp32 master weights, fp32 loss; on a GPU the forward runs under bf16 autocast. Dropout is
  off, the data order is fixed by the seed, and the learning rate is a function of the step alone, so a
  run is deterministic on one device.
- Resumable: every `save_every` steps the trainable tensors, the optimizer state, the step and the losses
  go to `checkpoint.pt` in the run folder (written whole, then renamed); the same command continues from
  it and ends with the same weights as a run that was never interrupted.
"""
from __future__ import annotations

import logging
import math
import os
import resource
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import memory
from ..errors import InsufficientResourcesError
from .settings import HealSettings
from .teacher import TeacherDistributions, kd_loss

log = logging.getLogger("hubprune")

CHECKPOINT = "checkpoint.pt"
ADAM_BETAS = (0.9, 0.95)
MAX_GRAD_NORM = 1.0
DROPOUT_ATTRIBUTES = ("dropout", "attention_dropout", "activation_dropout", "hidden_dropout", "layerdrop")


def learning_rate(settings: HealSettings, step: int) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then cosine to 10 % or constant."""
    peak, warmup = settings.peak_lr, settings.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if settings.schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, settings.steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def frozen_modules(model, family) -> set[int]:
    """ids of the parameters that never train: the embeddings and the head (they were not pruned)."""
    frozen = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return frozen | {id(family.embeddings(model).weight), id(model.lm_head.weight)}


def lora_targets(model, family) -> list[str]:
    """Every linear layer inside the decoder blocks, by its full name."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.startswith(family.layers_prefix)]


def _dropout_off(model) -> None:
    """Training mode (gradient checkpointing needs it) without dropout anywhere."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def estimate_bytes(model, settings: HealSettings, seq_len: int, trainable: int) -> dict:
    """Memory the training adds to the model already on the device (bytes), by part."""
    config = model.config
    tokens = settings.batch * seq_len
    layers = config.num_hidden_layers
    hidden, ffn = config.hidden_size, getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    heads = config.num_attention_heads
    blocks = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.") and "embed" not in n)
    if settings.checkpointing:  # block inputs kept, one block's activations live at a time
        activations = 4 * tokens * (layers * hidden + 16 * hidden + 4 * ffn) + 8 * settings.batch * heads * seq_len ** 2
    else:
        activations = layers * (4 * tokens * (16 * hidden + 4 * ffn) + 8 * settings.batch * heads * seq_len ** 2)
    parts = {"trainable weights, gradients and AdamW state (fp32)": 16 * trainable,
             "a private copy of the blocks' weights": 4 * blocks,
             "activations": activations,
             "logits and their gradient (fp32)": 3 * 4 * tokens * config.vocab_size}
    return parts


def check_fits(parts: dict, device: torch.device) -> None:
    """Refuse, with the numbers and what would make it fit, when training would not fit in memory."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        where = f"{torch.cuda.get_device_name(device)} has {free / 2**30:.1f} GiB free"
    else:
        free = memory.available_ram()
        where = f"the machine has {free / 2**30:.1f} GiB of RAM available" if free is not None else ""
    needed = sum(parts.values())
    if free is None or needed <= 0.9 * free:
        return
    detail = ", ".join(f"{name} {size / 2**30:.1f}" for name, size in parts.items())
    raise InsufficientResourcesError(
        f"healing needs about {needed / 2**30:.1f} GiB more ({detail} GiB) and {where}: use --heal-params lora, "
        "--heal-gradient-checkpointing, a shorter --heal-seq-len or a smaller --heal-batch")


class Healer:
    """One healing run of `model` (a pruned model on its device, in memory) against `teacher`."""

    def __init__(self, model, family, teacher: TeacherDistributions, windows: torch.Tensor, settings: HealSettings, *,
                 folder: Path, seed: int, device: torch.device, progress: bool = True):
        if windows.shape[0] < settings.steps * settings.batch:
            raise ValueError("fewer healing windows than steps x batch")
        self.model, self.family, self.teacher, self.windows = model, family, teacher, windows
        self.settings, self.folder, self.seed, self.device, self.progress = settings, Path(folder), seed, device, progress
        self.output_dtype = next(model.parameters()).dtype
        self.autocast = device.type == "cuda"

    # -- setting up ---------------------------------------------------------------------------------------
    def _prepare(self):
        """The model made trainable (adapters added for LoRA); returns (module to call, trainable params)."""
        s, model = self.settings, self.model
        frozen = frozen_modules(model, self.family)
        # Private fp32 copies of the block weights: the pruned model shares its kept tensors with the dense
        # one (and a caller's model must not change); fp32 is the master copy that trains or takes the merge.
        master = torch.float32 if s.params == "all" or not self.autocast else self.output_dtype
        for param in model.parameters():
            param.requires_grad_(False)
            if id(param) not in frozen:
                param.data = param.data.to(master, copy=True)
        _dropout_off(model)
        if s.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if s.params == "all":
            trainable = [p for p in model.parameters() if id(p) not in frozen]
            for p in trainable:
                p.requires_grad_(True)
            return model, trainable
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(self.seed)  # the adapters' initialisation
        config = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=0.0, bias="none",
                            target_modules=lora_targets(model, self.family))
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to answer
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = get_peft_model(model, config)
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        return wrapped, trainable

    def _trainable_count(self) -> int:
        """Parameters that will train (known before the adapters exist, for the memory check)."""
        if self.settings.params == "all":
            frozen = frozen_modules(self.model, self.family)
            return sum(p.numel() for p in self.model.parameters() if id(p) not in frozen)
        modules = dict(self.model.named_modules())
        return sum(self.settings.lora_rank * (modules[n].in_features + modules[n].out_features)
                   for n in lora_targets(self.model, self.family))

    # -- checkpoints --------------------------------------------------------------------------------------
    def _key(self) -> dict:
        return {"settings": asdict(self.settings), "seed": self.seed, "teacher": self.teacher.key}

    def _load(self, module, optimizer) -> tuple[int, list[float]]:
        path = self.folder / CHECKPOINT
        if not path.is_file():
            return 0, []
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["key"] != self._key():
            log.warning("%s belongs to other healing settings; healing from the start", path)
            return 0, []
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                params[name].copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        log.warning("healing resumes at step %d of %d from %s", state["step"], self.settings.steps, path)
        return state["step"], state["losses"]

    def _save(self, module, optimizer, step: int, losses: list[float]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        trainable = {n: p.detach().cpu() for n, p in module.named_parameters() if p.requires_grad}
        path = self.folder / CHECKPOINT
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"key": self._key(), "step": step, "losses": losses, "trainable": trainable,
                    "optimizer": optimizer.state_dict()}, tmp)
        os.replace(tmp, path)

    # -- the run ------------------------------------------------------------------------------------------
    def run(self):
        """Train; returns (the healed model, in its original dtype and in eval mode, and the report)."""
        s = self.settings
        check_fits(estimate_bytes(self.model, s, self.windows.shape[1], self._trainable_count()), self.device)
        module, trainable = self._prepare()
        count = sum(p.numel() for p in trainable)
        optimizer = torch.optim.AdamW(trainable, lr=s.peak_lr, betas=ADAM_BETAS, weight_decay=0.0)
        start, losses = self._load(module, optimizer)
        order = torch.randperm(self.windows.shape[0], generator=torch.Generator().manual_seed(self.seed)).tolist()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        bar = tqdm(range(start, s.steps), desc="healing", initial=start, total=s.steps, disable=not self.progress)
        for step in bar:
            rows = order[step * s.batch:(step + 1) * s.batch]
            loss = self._step(module, optimizer, rows, learning_rate(s, step))
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.4f}")
            if (step + 1) % s.save_every == 0 or step + 1 == s.steps:
                self._save(module, optimizer, step + 1, losses)
        seconds = time.perf_counter() - started
        model = self._finish(module)
        report = {
            "settings": {**asdict(s), "lr": s.peak_lr, "warmup": s.warmup_steps},
            "trainable_parameters": count,
            "tokens": s.steps * s.batch * self.windows.shape[1],
            "loss": {"first": losses[0], "last": losses[-1], "per_step": [round(x, 6) for x in losses]},
            "teacher": {"kept_tokens": self.teacher.k, "mean_kept_probability": self.teacher.mass,
                        "reused": self.teacher.reused},
            "resumed_at_step": start or None,
            "seconds": seconds, "seconds_per_step": seconds / max(1, s.steps - start),
            "peak_memory_bytes": _peak_memory(self.device),
            "precision": "bf16 autocast, fp32 master weights and loss" if self.autocast else "fp32",
        }
        return model, report

    def _step(self, module, optimizer, rows: list[int], lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = self.windows[rows].to(self.device)
        teacher_logp, teacher_ids = self.teacher.batch(rows, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = module(input_ids=ids, use_cache=False).logits
        loss = kd_loss(logits, teacher_logp, teacher_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], MAX_GRAD_NORM)
        optimizer.step()
        return loss.item()

    def _finish(self, module):
        """LoRA merged; the model back in its dtype, frozen, in eval mode, without checkpointing."""
        model = module.merge_and_unload() if self.settings.params == "lora" else module
        if self.settings.checkpointing:
            model.gradient_checkpointing_disable()
        for param in model.parameters():
            param.requires_grad_(False)
            if param.dtype != self.output_dtype:
                param.data = param.data.to(self.output_dtype)
        return model.eval()


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"device": torch.cuda.max_memory_allocated(device)}
    return {"process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux: KiB
