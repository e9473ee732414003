"""Exports of a hubprune output to the formats serving engines read natively (docs/format.md,
"Serving exports"): `vllm` (a folder in vLLM's DeciLM format) and `gguf` (one llama.cpp file)."""
from __future__ import annotations

from pathlib import Path

FORMATS = ("vllm", "gguf")


def export(folder: str | Path, fmt: str, output: str | Path, *, overwrite: bool = False,
           gguf_dtype: str = "float32") -> Path:
    """Write the hubprune output `folder` in format `fmt` to `output` (atomically); returns `output`."""
    from ..errors import InvalidOptionError, OutputExistsError

    folder, output = Path(folder), Path(output)
    if fmt == "vllm":
        from .vllm import export_vllm

        return export_vllm(folder, output, overwrite=overwrite)
    if fmt == "gguf":
        from .. import embedded
        from .gguf import DTYPES, export_gguf, is_hubprune_gguf
        from .vllm import hubprune_record

        if gguf_dtype not in DTYPES:
            raise InvalidOptionError(f"--gguf-dtype {gguf_dtype!r}: choose {', '.join(DTYPES)}")
        if output.suffix != ".gguf":
            raise InvalidOptionError(f"--output {output}: a gguf export is one file; name it *.gguf")
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
        if output.exists() and not (output.is_file() and is_hubprune_gguf(output)):
            raise OutputExistsError(f"{output} exists and is not a GGUF file hubprune wrote; it is never replaced")
        record = hubprune_record(folder)
        # The tokenizer comes from a source GGUF: the embedded model's for outputs pruned from it.
        source_gguf = embedded.default_model_gguf() if record.get("source", {}).get("reference") == "default" else None
        return export_gguf(folder, output, dtype=gguf_dtype, tokenizer_gguf=source_gguf)
    raise InvalidOptionError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
