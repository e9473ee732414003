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
from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, MistralConfig, Qwen2Config

NO_ATTENTION_LAYER_TYPE = "mlp"  # transformers maps it to a DummyLayer cache entry that stores nothing


def _default_block(config):
    return {
        "attention": {"no_op": False, "num_key_value_heads": config.num_key_value_heads},
        "ffn": {"no_op": False, "intermediate_size": config.intermediate_size},
    }


def _post_init(config):
    """Fill the per-block structure and derive `layer_types` from it.

    `layer_types` must say which layers have no attention: `generate()` builds its KV cache from the
    config, and without a dummy entry `get_seq_length()` reads an empty layer (wrong positions after
    prefill when layer 0 has no attention). Layers with attention keep the source's type (sliding
    windows of Mistral / Qwen2)."""
    if config.block_configs is None:
        config.block_configs = [_default_block(config) for _ in range(config.num_hidden_layers)]
    if len(config.block_configs) != config.num_hidden_layers:
        raise ValueError(
            f"block_configs has {len(config.block_configs)} entries but num_hidden_layers is {config.num_hidden_layers}"
        )
    source_types = getattr(config, "layer_types", None)
    if source_types is None:
        default_type = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
        source_types = [default_type] * config.num_hidden_layers
    config.layer_types = [
        NO_ATTENTION_LAYER_TYPE if block["attention"]["no_op"] else (t if t != NO_ATTENTION_LAYER_TYPE else "full_attention")
        for block, t in zip(config.block_configs, source_types)
    ]


def _validate_layer_type(config):
    if len(config.layer_types) != config.num_hidden_layers:
        raise ValueError("layer_types must have one entry per decoder layer")


@strict
class HubPruneLlamaConfig(LlamaConfig):
    model_type = "hubprune_llama"
    block_configs: list | None = None
    layer_types: list | None = None
    hubprune: dict | None = None  # provenance: method, source model, sparsity, parameter counts

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _post_init(self)

    def validate_layer_type(self):
        _validate_layer_type(self)


@strict
class HubPruneMistralConfig(MistralConfig):
    model_type = "hubprune_mistral"
    block_configs: list | None = None
    layer_types: list | None = None
    hubprune: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _post_init(self)

    def validate_layer_type(self):
        _validate_layer_type(self)


@strict
class HubPruneQwen2Config(Qwen2Config):
    model_type = "hubprune_qwen2"
    block_configs: list | None = None
    hubprune: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _post_init(self)

    def validate_layer_type(self):
        _validate_layer_type(self)


__all__ = ["HubPruneLlamaConfig", "HubPruneMistralConfig", "HubPruneQwen2Config"]
