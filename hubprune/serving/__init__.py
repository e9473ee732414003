"""Exports of a hubprune output to the formats serving engines read natively (docs/format.md,
"Serving exports"). One module per format; `export` picks it by name."""
from __future__ import annotations

from pathlib import Path

FORMATS = ("vllm",)


def export(folder: str | Path, fmt: str, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the hubprune output `folder` in format `fmt` to `output` (atomically); returns `output`."""
    from ..errors import InvalidOptionError

    if fmt not in FORMATS:
        raise InvalidOptionError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    from . import vllm

    return vllm.export_vllm(Path(folder), Path(output), overwrite=overwrite)
