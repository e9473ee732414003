"""Write a pruned model folder (into the temporary folder `outputs.atomic_folder` renames into place).

Folder contents: safetensors weights (sharded like the source), config.json, the remote-code files
when the architecture needs them, tokenizer files, `hubprune_plan.json` (the plan, in source
indices) and `hubprune.json` (every setting and result of the run).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PretrainedConfig, PreTrainedModel

from .modeling import REMOTE_CODE_FILES
from .outputs import RECORD_FILENAME
from .plan import PLAN_FILENAME, BoundPlan, PrunePlan
from .privacy import public
from .sequential import SAFETENSORS_INDEX
from .surgery import prune_block, pruned_outside

DEFAULT_SHARD_BYTES = 2 * 1024**3



def source_shard_size(source_folder: Path | None) -> int | None:
    """Largest shard of the source checkpoint in bytes, so the output is sharded like the source."""
    if source_folder is None:
        return None
    shards = list(Path(source_folder).glob("*.safetensors"))
    return max(f.stat().st_size for f in shards) if len(shards) > 1 else None


def save_model_folder(folder: Path, model: PreTrainedModel, tokenizer, *, plan: PrunePlan, record: dict,
                      max_shard_size: int | None = None) -> None:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    save_companions(folder, model.config, tokenizer, plan=plan, record=record)


def save_companions(folder: Path, config: PretrainedConfig, tokenizer, *, plan: PrunePlan, record: dict | None) -> None:
    """Everything next to the weights: remote code when needed, tokenizer, plan, run record."""
    if getattr(config, "auto_map", None):
        for file in REMOTE_CODE_FILES:
            shutil.copy(file, folder / file.name)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    plan.save(folder / PLAN_FILENAME)
    if record is not None:
        write_json(folder / RECORD_FILENAME, public(record))


class ShardWriter:
    """Writes tensors into safetensors shards as they come, holding at most one shard in memory."""

    def __init__(self, folder: Path, max_shard_size: int | None = None):
        self.folder = folder
        self.max_bytes = max_shard_size or DEFAULT_SHARD_BYTES
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.detach().to("cpu").contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.folder / f".part-{len(self.parts):05d}.safetensors"
        save_file(self.pending, path, metadata={"format": "pt"})
        self.parts.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Name the shards as transformers does and write the index when there is more than one."""
        if self.pending or not self.parts:
            self._flush()
        if len(self.parts) == 1:
            os.replace(self.parts[0][0], self.folder / "model.safetensors")
            return
        weight_map = {}
        for number, (path, names) in enumerate(self.parts, 1):
            final = f"model-{number:05d}-of-{len(self.parts):05d}.safetensors"
            os.replace(path, self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        write_json(self.folder / SAFETENSORS_INDEX, {"metadata": {"total_size": self.total_bytes},
                                                     "weight_map": weight_map})


def save_streamed_weights(folder: Path, loaded, bound: BoundPlan, *, max_shard_size: int | None = None,
                          overrides=None) -> None:
    """The pruned weights of a model loaded with offload, read from its shards one block at a time."""
    family, shards = loaded.family, loaded.shards
    writer = ShardWriter(folder, max_shard_size)
    cpu = torch.device("cpu")
    outside = [n for n in shards.names() if not n.startswith(family.layers_prefix)]
    outside = pruned_outside(shards.read(outside, device=cpu, dtype=loaded.dtype), bound, family, overrides)
    for name, tensor in outside.items():
        writer.add(name, tensor)
    for new_index, layer in enumerate(bound.kept_layers):
        prefix = f"{family.layers_prefix}{layer}."
        tensors = shards.read(shards.names(prefix), device=cpu, dtype=loaded.dtype)
        local = {name[len(prefix):]: tensor for name, tensor in tensors.items()}
        restored = overrides(layer) if overrides else None
        for name, tensor in prune_block(local, layer, bound, family, loaded.model.config, restored).items():
            writer.add(f"{family.layers_prefix}{new_index}.{name}", tensor)
    writer.close()


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename (never a truncated file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
