"""The per-block structure both serving formats are written from, and what neither can express."""
from __future__ import annotations

from ..errors import ExportError

OTHER_FORMATS = "it serves from the hubprune output itself (transformers, remote code)"


def block_configs(config: dict) -> list[dict]:
    """The output's `block_configs`; for a stock export (no such key), every block whole."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    return config.get("block_configs") or [
        {"attention": {"no_op": False, "num_key_value_heads": kv_heads},
         "ffn": {"no_op": False, "intermediate_size": config["intermediate_size"]}}
        for _ in range(config["num_hidden_layers"])]


def check_expressible(blocks: list[dict], engine: str) -> None:
    """Refuse, in one line, what Llama-shaped DeciLM blocks cannot carry in either engine."""
    for index, block in enumerate(blocks):
        if "v_head_dim" in block["attention"]:
            raise ExportError(f"block {index} has value-pruned attention (FASP), which {engine} cannot express (one "
                              f"head size for keys and values); {OTHER_FORMATS}")
        if "residual" in block:
            raise ExportError(f"this model's residual stream is sliced (SliceGPT), which {engine} cannot express; "
                              f"{OTHER_FORMATS}")
    if blocks[0]["attention"]["no_op"]:
        raise ExportError(f"block 0 has no attention, which {engine} cannot start from; {OTHER_FORMATS}")
