"""llama.cpp's GGUF, architecture `deci` (llama.cpp's DeciLM graph): per-block FFN widths and head counts,
a block without attention marked by zero heads. Written with the `gguf` package (llama.cpp's own
converter reads only NVIDIA's `ffn_mult` form of DeciLM configs). See docs/format.md, "Serving exports".

Two traps of llama.cpp's deci graph, handled here: a block that keeps attention but has no MLP would skip
its attention's residual too (the graph `continue`s when the FFN width is 0), so such a block gets a
one-neuron FFN whose down projection is zero (adds nothing; costs 3 x hidden parameters); and a first
block without attention cannot load, so it gets a zero attention (`blocks.servable_blocks`).

The tokenizer is copied from a source GGUF when there is one (the embedded model's: its original
tokenizer, `smollm` pre-tokenizer included), and otherwise converted from the output's tokenizer.json
(`gguf_vocab`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ExportError
from .blocks import OTHER_FORMATS, read_config, servable_blocks, zero_attention
from .gguf_vocab import add_hf_tokenizer
from .vllm import LLAMA_SHAPED, phi3_heads, split_phi3

MARKER_KEY = "hubprune.source"  # written into every export: only such a file is ever replaced
ROPE_TYPES = ("default", "linear", "llama3")  # RoPE variants written (llama3: Llama 3.1 and later)


def gguf_layout(config: dict) -> dict:
    """Per-block head counts and FFN widths for llama.cpp, checked (one-line refusals)."""
    family = config["model_type"].removeprefix("hubprune_")
    if family not in LLAMA_SHAPED:
        raise ExportError(f"the gguf format is written for {', '.join(LLAMA_SHAPED)} outputs, not {family}; "
                          f"{OTHER_FORMATS}")
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") not in ROPE_TYPES:
        raise ExportError(f"rope scaling {rope.get('rope_type')!r} is not written to GGUF yet (only "
                          f"{', '.join(ROPE_TYPES[1:])}); {OTHER_FORMATS}")
    if rope.get("partial_rotary_factor", config.get("partial_rotary_factor")) not in (None, 1, 1.0):
        raise ExportError("RoPE on part of each head (partial_rotary_factor) is not written to GGUF yet; "
                          f"{OTHER_FORMATS}")
    heads = config["num_attention_heads"]
    blocks = servable_blocks(config, "llama.cpp's deci architecture")
    context = config.get("max_position_embeddings", 2048)
    window = sliding_window(config, family)
    return {
        # llama.cpp's deci graph has no sliding window: within the window, full attention is the same thing,
        # so the file's context length stops there.
        "context": min(context, window) if window else context,
        "heads": [0 if b["attention"]["no_op"] else heads for b in blocks],
        "kv_heads": [0 if b["attention"]["no_op"] else b["attention"]["num_key_value_heads"] for b in blocks],
        # A block with attention and no MLP gets a one-neuron zero FFN (see the module docstring).
        "ffn": [(1 if not b["attention"]["no_op"] else 0) if b["ffn"]["no_op"] else b["ffn"]["intermediate_size"]
                for b in blocks],
        "family": family,
        "blocks": blocks,
    }


def sliding_window(config: dict, family: str) -> int | None:
    """The attention window of the layers that have one (None: none shorter than the context). Mistral
    and Phi-3 slide on every layer when `sliding_window` is set; Qwen2 on its `sliding_attention` layers."""
    window = config.get("sliding_window")
    types = config.get("layer_types")
    slides = "sliding_attention" in types if types else family in ("mistral", "phi3")
    if slides and window and window < config.get("max_position_embeddings", 2048):
        return int(window)
    return None


def is_hubprune_gguf(path: Path) -> bool:
    """Whether `path` is a GGUF file hubprune wrote (so `--overwrite` may replace it)."""
    import gguf

    try:
        return MARKER_KEY in gguf.GGUFReader(path).fields
    except Exception:  # noqa: BLE001 - not a GGUF file at all
        return False


def _permute(weight, heads: int):
    """Hugging Face's rotate-half q/k layout -> llama.cpp's interleaved pairs (its "normal" RoPE)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def export_gguf(folder: Path, output: Path, *, dtype: str, name: str, tokenizer_gguf: Path | None = None) -> Path:
    """Write the hubprune output `folder`, called `name` once in place, as one GGUF file `output` (written
    aside, then renamed)."""
    import gguf
    from safetensors import safe_open

    config = read_config(folder)
    layout = gguf_layout(config)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.DECI])
    try:
        writer.add_name(name)
        writer.add_string(MARKER_KEY, name)
        writer.add_block_count(len(layout["ffn"]))
        writer.add_context_length(layout["context"])
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(layout["ffn"])
        writer.add_head_count(layout["heads"])
        writer.add_head_count_kv(layout["kv_heads"])
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        _add_rope(writer, config.get("rope_parameters") or {}, head_dim)
        writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type({"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                              "bfloat16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        if tokenizer_gguf is not None:
            _copy_tokenizer(writer, Path(tokenizer_gguf))
        else:
            add_hf_tokenizer(writer, folder, config["vocab_size"])
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.DECI, len(layout["ffn"]))
        for shard in sorted(folder.glob("*.safetensors")):
            with safe_open(shard, framework="pt") as reader:
                for stored in reader.keys():
                    tensors = {stored: reader.get_tensor(stored).float()}
                    if layout["family"] == "phi3":  # fused projections, under Llama's names
                        tensors = split_phi3(stored, tensors[stored], *phi3_heads(config))
                    for name, tensor in tensors.items():
                        if name.endswith(("q_proj.weight", "q_proj.bias")):
                            tensor = _permute(tensor, heads)
                        elif name.endswith(("k_proj.weight", "k_proj.bias")):
                            tensor = _permute(tensor, layout["kv_heads"][int(name.split(".")[2])])
                        _add(writer, names, name, tensor, dtype)
        for name, tensor in zero_attention(config, layout["blocks"]).items():
            _add(writer, names, name, tensor, dtype)
        _add_zero_ffns(writer, names, config, layout, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


Q8_0_BLOCK = 32  # values per Q8_0 block: a row must be a whole number of blocks


def _add_rope(writer, rope: dict, head_dim: int) -> None:
    """The RoPE base and scaling: `linear` as llama.cpp's frequency scale; `llama3` as the per-frequency
    divisors llama.cpp reads from `rope_freqs.weight` (transformers' llama3 frequencies over the plain ones)."""
    import gguf
    import numpy as np

    base = float(rope.get("rope_theta", 10000.0))
    writer.add_rope_freq_base(base)
    kind = rope.get("rope_type", "default")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          llama3_rope_divisors(rope, base, head_dim).astype(np.float32))


def llama3_rope_divisors(rope: dict, base: float, head_dim: int):
    """Per frequency, plain / llama3-scaled inverse frequency (1 for high frequencies, `factor` for low
    ones, a smooth blend between), as transformers' `_compute_llama3_parameters` scales them."""
    import numpy as np

    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factor, low, high = rope["factor"], rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope["original_max_position_embeddings"]
    wavelen = 2 * np.pi / inv_freq
    smooth = (old_context / wavelen - low) / (high - low)
    scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return inv_freq / np.where(medium, blended, scaled)


def _add(writer, names, name: str, tensor, dtype: str) -> None:
    """One tensor under its llama.cpp name, in `dtype` (a `GGUF_DTYPES` key). Vectors (norms, biases) stay
    fp32, as llama.cpp expects; a q8_0 matrix whose rows are not whole blocks is written in float16, as
    llama.cpp's own converter does."""
    import gguf
    import numpy as np
    import torch

    gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if gguf_name is None:
        raise ExportError(f"no llama.cpp name for tensor {name}")
    if dtype == "q8_0" and tensor.shape[-1] % Q8_0_BLOCK:
        dtype = "float16"
    if tensor.ndim == 1 or dtype == "float32":
        writer.add_tensor(gguf_name, tensor.numpy().astype(np.float32))
    elif dtype == "float16":
        writer.add_tensor(gguf_name, tensor.to(torch.float16).numpy())
    elif dtype == "bfloat16":  # numpy has no such type: the raw 16-bit words, tagged BF16
        raw = tensor.to(torch.bfloat16).view(torch.int16).numpy()
        writer.add_tensor(gguf_name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)
    else:  # q8_0: blocks of 32 int8 values with one fp16 scale, quantized by the gguf package
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(gguf_name, gguf.quants.quantize(tensor.numpy().astype(np.float32), qtype), raw_dtype=qtype)


def _add_zero_ffns(writer, names, config: dict, layout: dict, dtype) -> None:
    """The one-neuron, zero-output FFN of every block that keeps attention but lost its MLP."""
    import torch

    hidden = config["hidden_size"]
    for index, block in enumerate(layout["blocks"]):
        if block["ffn"]["no_op"] and layout["ffn"][index] == 1:
            prefix = f"model.layers.{index}."
            _add(writer, names, prefix + "post_attention_layernorm.weight", torch.ones(hidden), dtype)
            _add(writer, names, prefix + "mlp.gate_proj.weight", torch.zeros(1, hidden), dtype)
            _add(writer, names, prefix + "mlp.up_proj.weight", torch.zeros(1, hidden), dtype)
            _add(writer, names, prefix + "mlp.down_proj.weight", torch.zeros(hidden, 1), dtype)


def _copy_tokenizer(writer, source: Path) -> None:
    """Every `tokenizer.*` key of the source GGUF, with its type."""
    import gguf

    reader = gguf.GGUFReader(source)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), kind)
