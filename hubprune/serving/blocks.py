"""What both serving formats are written from: the output's config and record, its per-block structure,
and what neither format can express."""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportError, InvalidOptionError
from ..outputs import RECORD_FILENAME, read_json_object

OTHER_FORMATS = "it serves from the hubprune output itself (transformers, remote code)"
# What a plan may hold that neither format carries (checked before pruning when an export is asked for).
NOT_SERVABLE = {"keep_value_channels": "value-pruned attention (FASP)", "residual_width": "a sliced residual (SliceGPT)"}


def read_config(folder: Path) -> dict:
    return read_json_object(folder / "config.json", ExportError, "it is not a readable model folder")


def hubprune_record(folder: Path) -> dict:
    if not (folder / "config.json").is_file():
        raise InvalidOptionError(f"{folder}: not a model folder (no config.json)")
    if not (folder / RECORD_FILENAME).is_file():
        raise InvalidOptionError(f"{folder}: not a hubprune output (no {RECORD_FILENAME}); export prunes' outputs")
    return read_json_object(folder / RECORD_FILENAME, ExportError, "hubprune wrote it: prune again")


def block_configs(config: dict) -> list[dict]:
    """The output's `block_configs`; for a stock export (no such key), every block whole."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    return config.get("block_configs") or [
        {"attention": {"no_op": False, "num_key_value_heads": kv_heads},
         "ffn": {"no_op": False, "intermediate_size": config["intermediate_size"]}}
        for _ in range(config["num_hidden_layers"])]


def servable_blocks(config: dict, engine: str) -> list[dict]:
    """The blocks as both engines run them, after refusing (one line) what they cannot carry.

    Both engines need attention in the first block (vLLM starts the residual stream there, llama.cpp
    cannot load a first block without heads). Where the plan removed it, block 0 gets a *zero attention*:
    one KV head and zero weights, whose output is exactly zero, so the model computes what the pruned model
    computes. It costs (2 x heads + 2) x head_dim x hidden parameters and one layer of one-head KV cache."""
    blocks = block_configs(config)
    for index, block in enumerate(blocks):
        if "v_head_dim" in block["attention"]:
            raise ExportError(f"block {index} has {NOT_SERVABLE['keep_value_channels']}, which {engine} cannot "
                              f"express (one head size for keys and values); {OTHER_FORMATS}")
        if "residual" in block:
            raise ExportError(f"this model has {NOT_SERVABLE['residual_width']}, which {engine} cannot express; "
                              f"{OTHER_FORMATS}")
    if blocks[0]["attention"]["no_op"]:
        blocks = [{**blocks[0], "attention": {"no_op": False, "num_key_value_heads": 1, "zero": True}}, *blocks[1:]]
    return blocks


def zero_attention(config: dict, blocks: list[dict]) -> dict:
    """The tensors of block 0's zero attention (Hugging Face names, fp32), if it has one."""
    import torch

    if not blocks[0]["attention"].get("zero"):
        return {}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    prefix = "model.layers.0."
    tensors = {prefix + "input_layernorm.weight": torch.ones(hidden),
               prefix + "self_attn.q_proj.weight": torch.zeros(heads * head_dim, hidden),
               prefix + "self_attn.k_proj.weight": torch.zeros(head_dim, hidden),
               prefix + "self_attn.v_proj.weight": torch.zeros(head_dim, hidden),
               prefix + "self_attn.o_proj.weight": torch.zeros(hidden, heads * head_dim)}
    if config["model_type"].removeprefix("hubprune_") == "qwen2":  # q/k/v carry biases
        tensors.update({prefix + f"self_attn.{p}_proj.bias": torch.zeros(rows)
                        for p, rows in (("q", heads * head_dim), ("k", head_dim), ("v", head_dim))})
    return tensors
