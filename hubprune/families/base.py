"""What hubprune needs to know about a model family: module names, how to slice an FFN, which
config fields are indexed by layer. One small subclass per family."""
from __future__ import annotations

import torch


class Family:
    """Llama-style decoder (separate q/k/v/o, gate/up/down SwiGLU MLP, two RMSNorms per block)."""

    model_type: str = ""  # the source `config.model_type`
    pruned_class_prefix: str = ""  # HubPrune<prefix>Config / HubPrune<prefix>ForCausalLM

    layers_prefix = "model.layers."
    attention_prefix = "self_attn."
    attention_norm = "input_layernorm."
    mlp_prefix = "mlp."
    mlp_norm = "post_attention_layernorm."
    ffn_rows = ("mlp.gate_proj", "mlp.up_proj")  # producers: their output rows are FFN neurons
    ffn_cols = ("mlp.down_proj",)  # consumer: its input columns are FFN neurons
    value_rows = "self_attn.v_proj"  # producer of the value channels
    value_cols = "self_attn.o_proj"  # consumer: column h * head_dim + c is channel c of head h

    @property
    def pruned_model_type(self) -> str:
        return f"hubprune_{self.model_type}"

    @property
    def pruned_config_class(self) -> str:
        return f"HubPrune{self.pruned_class_prefix}Config"

    @property
    def pruned_model_class(self) -> str:
        return f"HubPrune{self.pruned_class_prefix}ForCausalLM"

    def ffn_width(self, config) -> int:
        return config.intermediate_size

    def is_attention_param(self, local_name: str) -> bool:
        return local_name.startswith((self.attention_prefix, self.attention_norm))

    def is_mlp_param(self, local_name: str) -> bool:
        return local_name.startswith((self.mlp_prefix, self.mlp_norm))

    def slice_ffn(self, tensors: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keep FFN neurons `keep` (ascending indices) in one block's tensors (names local to the block)."""
        out = dict(tensors)
        for name in self.ffn_rows:
            for suffix in (".weight", ".bias"):
                if name + suffix in out:
                    out[name + suffix] = out[name + suffix].index_select(0, keep.to(out[name + suffix].device))
        for name in self.ffn_cols:
            weight = out[name + ".weight"]
            out[name + ".weight"] = weight.index_select(1, keep.to(weight.device))
        return out

    def value_groups(self, config) -> tuple[int, int]:
        """(KV heads, head dim): a value channel is one (KV group, channel) pair."""
        return config.num_key_value_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def value_columns(self, config, groups: list[list[int]]) -> torch.Tensor:
        """The o_proj input columns of the kept value channels, in the pruned layout (head-major)."""
        heads_per_group = config.num_attention_heads // config.num_key_value_heads
        head_dim = self.value_groups(config)[1]
        return torch.tensor([h * head_dim + c for h in range(config.num_attention_heads)
                             for c in groups[h // heads_per_group]], dtype=torch.long)

    def value_row_indices(self, config, groups: list[list[int]]) -> torch.Tensor:
        """The v_proj output rows of the kept value channels, in the pruned layout (group-major)."""
        head_dim = self.value_groups(config)[1]
        return torch.tensor([g * head_dim + c for g, channels in enumerate(groups) for c in channels], dtype=torch.long)

    def slice_values(self, tensors: dict[str, torch.Tensor], groups: list[list[int]], config) -> dict[str, torch.Tensor]:
        """Keep value channels `groups` (per KV group) in one block's tensors: v rows (+ bias), o columns."""
        out = dict(tensors)
        rows = self.value_row_indices(config, groups)
        for suffix in (".weight", ".bias"):
            name = self.value_rows + suffix
            if name in out:
                out[name] = out[name].index_select(0, rows.to(out[name].device))
        weight = out[self.value_cols + ".weight"]
        out[self.value_cols + ".weight"] = weight.index_select(1, self.value_columns(config, groups).to(weight.device))
        return out

    def source_layer_types(self, config) -> list[str]:
        """Attention type of every source layer (full or sliding window)."""
        types = getattr(config, "layer_types", None)
        if types is not None:
            return list(types)
        kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
        return [kind] * config.num_hidden_layers

    def remap_layer_fields(self, config_dict: dict, source_config, kept_layers: list[int]) -> None:
        """Rewrite config fields indexed by layer after blocks are removed (in place)."""
        if getattr(source_config, "layer_types", None) is not None:
            config_dict["layer_types"] = [source_config.layer_types[l] for l in kept_layers]
