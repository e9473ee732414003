"""What a MODEL argument names: a local model folder, a .gguf file, the embedded default model or a Hub
repo id; told apart without touching the network or importing torch."""
from __future__ import annotations

from pathlib import Path

from .embedded import DEFAULT_MODEL
from .errors import ModelNotFoundError


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
