# Configuration of a structurally pruned causal LM written by hubprune.
#
# This file is copied into every exported model folder and is loaded with `trust_remote_code=True`.
# It depends only on transformers (>= 5.24, < 6): a user does not need hubprune to load the model.
#
# A pruned model is its source model's config plus `block_configs`, one entry per kept decoder block:
#     {"attention": {"no_op": bool, "num_key_value_heads": int},
#      "ffn": {"no_op": bool, "intermediate_size": int}}
# (the key names follow the vLLM "AnyModel"/DeciLM schema). `no_op` means the sub-module is skipped
# entirely: a block with `attention.no_op` has no q/k/v/o weights, no input norm and no KV-cache entry.
# Optional per-block keys: `attention.v_head_dim` (value channels per head, when fewer than head_dim) and
# `residual: {"input": int, "middle": int, "output": int}` (SliceGPT: the widths of the rotated and
# sliced residual stream at the block's input, after its attention and after its MLP; `hidden_size`
# stays the source's, the width the fused norms normalise by). A sliced model never ties its head to
# the embeddings: they are rotated differently.
import importlib

from huggingface_hub.dataclasses import strict

# The layer type of a block without attention. transformers gives "moe" (and "mlp") a DummyLayer cache
# entry that stores nothing, and unlike "mlp", "moe" passes the stock config validation, which
# AutoTokenizer runs on config.json without this file (earlier outputs wrote "mlp").
NO_ATTENTION_LAYER_TYPE = "moe"
_NO_ATTENTION_TYPES = ("moe", "mlp")


def _default_block(config):
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads  # OPT: no GQA
    width = getattr(config, "intermediate_size", None) or config.ffn_dim  # OPT: ffn_dim
    return {
        "attention": {"no_op": False, "num_key_value_heads": kv_heads},
        "ffn": {"no_op": False, "intermediate_size": width},
    }


class _HubPruneConfigMixin:
    """Shared by the per-family config classes below (each declares the same three fields)."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._derive_structure()

    def _derive_structure(self):
        """Fill the per-block structure and derive `layer_types` from it.

        `layer_types` must say which layers have no attention: `generate()` builds its KV cache from the
        config, and without a dummy entry `get_seq_length()` reads an empty layer (wrong positions after
        prefill when layer 0 has no attention). Layers with attention keep the source's type (sliding
        windows of Mistral / Qwen2)."""
        if self.block_configs is None:
            self.block_configs = [_default_block(self) for _ in range(self.num_hidden_layers)]
        if len(self.block_configs) != self.num_hidden_layers:
            raise ValueError(
                f"block_configs has {len(self.block_configs)} entries but num_hidden_layers is {self.num_hidden_layers}"
            )
        source_types = getattr(self, "layer_types", None)
        if source_types is None:
            default_type = "sliding_attention" if getattr(self, "sliding_window", None) else "full_attention"
            source_types = [default_type] * self.num_hidden_layers
        self.layer_types = [
            NO_ATTENTION_LAYER_TYPE if block["attention"]["no_op"]
            else (t if t not in _NO_ATTENTION_TYPES else "full_attention")
            for block, t in zip(self.block_configs, source_types)
        ]

    def validate_layer_type(self):  # the stock check would refuse the "mlp" entries of older outputs
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError("layer_types must have one entry per decoder layer")


# The families with a pruned form: model_type -> (transformers module, class-name prefix, stock config
# class). The pruned classes are HubPrune<prefix>Config here and HubPrune<prefix>ForCausalLM /
# HubPrune<prefix>Model in modeling_hubprune.py; the stock modules are <prefix>Attention, <prefix>MLP, ...
FAMILIES = {
    "llama": ("llama", "Llama", "LlamaConfig"),
    "mistral": ("mistral", "Mistral", "MistralConfig"),
    "qwen2": ("qwen2", "Qwen2", "Qwen2Config"),
    "qwen3": ("qwen3", "Qwen3", "Qwen3Config"),
    "phi3": ("phi3", "Phi3", "Phi3Config"),
    "opt": ("opt", "OPT", "OPTConfig"),
    "gemma3_text": ("gemma3", "Gemma3", "Gemma3TextConfig"),
    "olmo2": ("olmo2", "Olmo2", "Olmo2Config"),
    "olmo3": ("olmo3", "Olmo3", "Olmo3Config"),
    "smollm3": ("smollm3", "SmolLM3", "SmolLM3Config"),
}


def _pruned_config_class(model_type: str, module: str, prefix: str, stock_name: str) -> type:
    stock = getattr(importlib.import_module(f"transformers.models.{module}.configuration_{module}"), stock_name)
    fields = {"block_configs": list | None, "hubprune": dict | None}  # hubprune: method, source, sparsity, counts
    if "layer_types" not in getattr(stock, "__dataclass_fields__", {}):
        fields["layer_types"] = list | None
    name = f"HubPrune{prefix}Config"
    namespace = {"__module__": __name__, "__qualname__": name, "__annotations__": fields,
                 "model_type": f"hubprune_{model_type}", **dict.fromkeys(fields)}
    return strict(type(name, (_HubPruneConfigMixin, stock), namespace))


for _model_type, _stock in FAMILIES.items():
    _cls = _pruned_config_class(_model_type, *_stock)
    globals()[_cls.__name__] = _cls

__all__ = [f"HubPrune{prefix}Config" for _, prefix, _ in FAMILIES.values()]
