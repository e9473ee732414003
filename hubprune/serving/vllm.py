"""vLLM's native DeciLM format ("nemotron-nas"): Llama-shaped decoder blocks, each with its own FFN width
and KV heads, and attention or MLP removable per block. vLLM serves it with its own `DeciLMForCausalLM`,
so no hubprune code runs in the engine; only the small config class `configuration_decilm.py` travels
with the model (no transformers release registers "nemotron-nas"). See docs/format.md, "Serving exports".

What the format cannot carry is refused in one line, before anything is written: value-pruned attention
(FASP), a sliced residual stream (SliceGPT) and OPT. A first block without attention gets a zero attention
(`blocks.servable_blocks`): vLLM's first layer needs a residual stream to start from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ExportError
from ..outputs import RECORD_FILENAME, OutputLock, atomic_folder, check_writable, recover
from .blocks import OTHER_FORMATS, hubprune_record, read_config, servable_blocks, zero_attention

CONFIG_CLASS_FILE = Path(__file__).with_name("configuration_decilm.py")
LLAMA_SHAPED = ("llama", "mistral", "qwen2", "phi3")  # families whose blocks DeciLM's Llama blocks express
# Keys of the pruned config that describe hubprune's own format, not the model.
_DROPPED = ("architectures", "model_type", "auto_map", "block_configs", "layer_types", "transformers_version")
_NOT_COPIED = ("config.json", "README.md", RECORD_FILENAME)
ZERO_ATTENTION_SHARD = "zero-attention.safetensors"


def decilm_config(config: dict) -> dict:
    """The DeciLM config.json of a hubprune output's (or a stock export's) config.json."""
    family = config["model_type"].removeprefix("hubprune_")
    if family not in LLAMA_SHAPED:
        raise ExportError(f"the vllm format carries Llama-shaped blocks ({', '.join(LLAMA_SHAPED)}), not {family}; "
                          f"{OTHER_FORMATS}")
    heads = config["num_attention_heads"]
    blocks = servable_blocks(config, "vLLM's DeciLM model")
    source_types = config.get("layer_types") or ["full_attention"] * len(blocks)
    out = {k: v for k, v in config.items() if k not in _DROPPED}
    out.update(model_type="nemotron-nas", architectures=["DeciLMForCausalLM"],
               auto_map={"AutoConfig": f"{CONFIG_CLASS_FILE.stem}.DeciLMConfig"})
    out["block_configs"] = [
        {"attention": {"no_op": block["attention"]["no_op"], "replace_with_linear": False,
                       "n_heads_in_group": heads // block["attention"]["num_key_value_heads"]},
         "ffn": {"no_op": block["ffn"]["no_op"], "replace_with_linear": False,
                 "intermediate_size": block["ffn"]["intermediate_size"]}}
        for block in blocks]
    _add_ffn_mult(out["block_configs"], config["hidden_size"])
    # Sliding-window layers keep their window; a block without attention has no type to keep.
    out["layer_types"] = [t if t in ("full_attention", "sliding_attention") else "full_attention" for t in source_types]
    if family == "qwen2":  # q/k/v have biases, o_proj has none: vLLM's DeciLM reads `qkv_bias` for that
        out.update(qkv_bias=True, attention_bias=False)
    return out


FFN_MULT_STEP = 256  # NVIDIA's `ffn_mult` form describes widths rounded up to a multiple of 256


def ffn_mult_width(ffn_mult: float, hidden: int) -> int:
    """The FFN width the engines that read `ffn_mult` derive from it (vLLM, SGLang, TensorRT-LLM, mlx-lm)."""
    width = int(2 * ffn_mult * hidden / 3)
    return -(-width // FFN_MULT_STEP) * FFN_MULT_STEP


def _add_ffn_mult(blocks: list[dict], hidden: int) -> None:
    """NVIDIA's `ffn_mult` next to each exact width, when every width is a multiple of 256 (what
    `--ffn-multiple 256` gives), so that engines reading only that form (TensorRT-LLM, mlx-lm, llama.cpp's
    converter) read the same widths. Otherwise the exact widths alone: `ffn_mult` would round them up."""
    widths = [None if b["ffn"]["no_op"] else b["ffn"]["intermediate_size"] for b in blocks]
    mults = [None if w is None else round(1.5 * w / hidden, 6) for w in widths]
    if all(w is None or (w % FFN_MULT_STEP == 0 and ffn_mult_width(m, hidden) == w) for w, m in zip(widths, mults)):
        for block, mult in zip(blocks, mults):
            block["ffn"]["ffn_mult"] = mult


def export_vllm(folder: Path, output: Path, *, overwrite: bool = False) -> Path:
    """Write the hubprune output `folder` in vLLM's DeciLM format to the folder `output` (atomically,
    under its lock)."""
    hubprune_record(folder)
    decilm_config(read_config(folder))  # refused before anything is written
    check_writable(output)
    with OutputLock(output):
        recover(output)
        with atomic_folder(output, overwrite) as tmp:
            write_vllm(folder, tmp, name=output.name, source=folder.name)
    return output


def write_vllm(folder: Path, target: Path, *, name: str, source: str) -> None:
    """The vLLM export of `folder` into the folder `target` (created); `name` and `source`: what the export
    and the output it comes from will be called once in place (the record says how to serve it)."""
    record = hubprune_record(folder)
    config = read_config(folder)
    decilm = decilm_config(config)
    target.mkdir(exist_ok=True)
    (target / "config.json").write_text(json.dumps(decilm, indent=2) + "\n")
    shutil.copy(CONFIG_CLASS_FILE, target / CONFIG_CLASS_FILE.name)
    if config["model_type"].removeprefix("hubprune_") == "phi3":
        _split_phi3_weights(folder, target, config)
    for path in folder.iterdir():
        if (path.is_file() and path.suffix not in (".py", ".gguf") and path.name not in _NOT_COPIED
                and not (target / path.name).exists()):
            shutil.copy(path, target / path.name)
    _add_zero_attention(target, config)
    record["export"] = {"format": "vllm", "from": source, "serve": f"vllm serve {name} --trust-remote-code"}
    (target / RECORD_FILENAME).write_text(json.dumps(record, indent=1) + "\n")


def _add_zero_attention(target: Path, config: dict) -> None:
    """Block 0's zero attention, when it has one, as its own shard (listed in the index if there is one)."""
    import torch
    from safetensors.torch import save_file

    tensors = zero_attention(config, servable_blocks(config, "vLLM's DeciLM model"))
    if not tensors:
        return
    dtype = getattr(torch, config.get("dtype") or config.get("torch_dtype") or "float32")
    save_file({k: v.to(dtype) for k, v in tensors.items()}, target / ZERO_ATTENTION_SHARD, metadata={"format": "pt"})
    index_file = target / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        index["weight_map"].update(dict.fromkeys(tensors, ZERO_ATTENTION_SHARD))
        index_file.write_text(json.dumps(index, indent=1) + "\n")


def split_phi3(name: str, tensor, heads: int, head_dim: int) -> dict:
    """One Phi-3 tensor under Llama's names: the fused `qkv_proj` into q/k/v, `gate_up_proj` into gate and
    up (the gate rows come first), anything else as it is."""
    if name.endswith("self_attn.qkv_proj.weight"):
        rows = tensor.shape[0] - heads * head_dim  # k and v rows together
        q, k, v = tensor.split([heads * head_dim, rows // 2, rows // 2])
        return {name.replace("qkv_proj", part): value.contiguous()
                for part, value in (("q_proj", q), ("k_proj", k), ("v_proj", v))}
    if name.endswith("mlp.gate_up_proj.weight"):
        gate, up = tensor.chunk(2)
        return {name.replace("gate_up_proj", "gate_proj"): gate.contiguous(),
                name.replace("gate_up_proj", "up_proj"): up.contiguous()}
    return {name: tensor}


def phi3_heads(config: dict) -> tuple[int, int]:
    heads = config["num_attention_heads"]
    return heads, config.get("head_dim") or config["hidden_size"] // heads


def _split_phi3_weights(folder: Path, target: Path, config: dict) -> None:
    """Phi-3 fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`; DeciLM reads them apart. One
    shard at a time, so memory holds one shard."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    heads, head_dim = phi3_heads(config)
    index_file = folder / "model.safetensors.index.json"
    weight_map = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = {}
        with safe_open(shard, framework="pt") as reader:
            for name in reader.keys():
                tensors.update(split_phi3(name, reader.get_tensor(name), heads, head_dim))
        save_file(tensors, target / shard.name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard.name))
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        index["weight_map"] = weight_map
        (target / index_file.name).write_text(json.dumps(index, indent=1) + "\n")
