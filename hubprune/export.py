"""Write a pruned model folder atomically: everything goes to a temporary sibling folder that is
renamed into place only when complete, so a failed or interrupted run leaves no half-written output.

Folder contents: safetensors weights (sharded like the source), config.json, the remote-code files
when the architecture needs them, tokenizer files, `hubprune_plan.json` (the plan, in source
indices) and `hubprune.json` (every setting and result of the run).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from transformers import PreTrainedModel

from .errors import InsufficientResourcesError, OutputExistsError
from .modeling import REMOTE_CODE_FILES
from .plan import PLAN_FILENAME, PrunePlan

RECORD_FILENAME = "hubprune.json"


def check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")


@contextmanager
def atomic_folder(output: Path, overwrite: bool):
    """Yield a temporary folder; on success it replaces `output`, on failure it is removed."""
    output = Path(output)
    check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.rglob("*"):  # some writers create 0600 temp files; outputs are for sharing
            path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientResourcesError(
                f"disk full while writing {output}; free space or choose --output on a larger disk") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    if getattr(model.config, "auto_map", None):
        for file in REMOTE_CODE_FILES:
            shutil.copy(file, folder / file.name)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    plan.save(folder / PLAN_FILENAME)
    write_json(folder / RECORD_FILENAME, record)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename (never a truncated file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
