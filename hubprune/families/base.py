"""What hubprune needs to know about a model family: module names, how to slice an FFN, which
config fields are indexed by layer, and how one block's sub-modules run on their own (for the
block-by-block calibration of `sequential.DecoderStack`). One small subclass per family."""
from __future__ import annotations

import torch
from torch.func import functional_call


class Family:
    """Llama-style decoder (separate q/k/v/o, gate/up/down SwiGLU MLP, two RMSNorms per block)."""

    model_type: str = ""  # the source `config.model_type`
    pruned_class_prefix: str = ""  # HubPrune<prefix>Config / HubPrune<prefix>ForCausalLM / HubPrune<prefix>Model

    layers_prefix = "model.layers."
    attention_prefix = "self_attn."
    mlp_prefix = "mlp."  # every MLP weight's name starts with one of `mlp_weights`
    mlp_weights: tuple[str, ...] = ("mlp.",)
    # The norms inside each residual branch, (before, after) the sub-module: a skipped sub-module takes
    # both with it. Pre-norm (Llama) has one before each; OLMo 2 one after each; Gemma 3 both.
    attention_norms: tuple[str | None, str | None] = ("input_layernorm", None)
    mlp_norms: tuple[str | None, str | None] = ("post_attention_layernorm", None)
    ffn_rows = ("mlp.gate_proj", "mlp.up_proj")  # producers: their output rows are FFN neurons
    ffn_cols = ("mlp.down_proj",)  # consumer: its input columns are FFN neurons
    value_rows = "self_attn.v_proj"  # producer of the value channels
    value_cols = "self_attn.o_proj"  # consumer: column h * head_dim + c is channel c of head h
    attention_inputs = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # read the residual stream
    # Outside the blocks (full names), for methods that rewrite them (SliceGPT rotates the residual stream).
    embedding_weight = "model.embed_tokens.weight"
    final_norm_weight = "model.norm.weight"
    head_weight = "lm_head.weight"
    # Norms inside the attention that act on query / key heads, not on the residual stream: a rotation
    # of the residual leaves them as they are (Qwen3's per-head q/k norms).
    head_space_norms: tuple[str, ...] = ()
    residual_slicing = True  # RMSNorm everywhere, so norms fold into the next linear layers (SliceGPT)
    evopress_seq_len = 8192  # EvoPress's calibration sequence length for this family (the 2SSP reference's)

    def tiny_config(self):
        """A tiny random config that is structurally faithful to the family (the tests build every family
        from it: the format matrix, the method contract)."""
        raise NotImplementedError(f"{type(self).__name__} has no tiny_config")

    @property
    def pruned_model_type(self) -> str:
        return f"hubprune_{self.model_type}"

    @property
    def pruned_config_class(self) -> str:
        return f"HubPrune{self.pruned_class_prefix}Config"

    @property
    def pruned_model_class(self) -> str:
        return f"HubPrune{self.pruned_class_prefix}ForCausalLM"

    @property
    def pruned_base_class(self) -> str:
        """The base model without its head (AutoModel)."""
        return f"HubPrune{self.pruned_class_prefix}Model"

    def ffn_width(self, config) -> int:
        return config.intermediate_size

    @property
    def attention_norm(self) -> str:
        """The norm before the attention (weight-name prefix): SliceGPT folds it into q/k/v."""
        return self.attention_norms[0] + "."

    @property
    def mlp_norm(self) -> str:
        return self.mlp_norms[0] + "."

    def is_norm_param(self, local_name: str) -> bool:
        return local_name.startswith(_prefixes(*self.attention_norms, *self.mlp_norms))

    def is_attention_param(self, local_name: str) -> bool:
        return local_name.startswith((self.attention_prefix, *_prefixes(*self.attention_norms)))

    def is_mlp_param(self, local_name: str) -> bool:
        return local_name.startswith((*self.mlp_weights, *_prefixes(*self.mlp_norms)))

    def set_ffn_width(self, config_dict: dict, width: int) -> None:
        config_dict["intermediate_size"] = width

    # -- the model's structure -------------------------------------------------------------------
    def decoder(self, model):
        """The module holding the embeddings, the blocks and the final norm."""
        return model.model

    def layers(self, model) -> torch.nn.ModuleList:
        return self.decoder(model).layers

    def embeddings(self, model) -> torch.nn.Embedding:
        return self.decoder(model).embed_tokens

    def rebuild_buffers(self, model, config, device) -> None:
        """Recreate non-persistent buffers (rotary frequencies) left on `meta` by a weightless build."""
        from ..modeling.modeling_hubprune import rotary_embedding  # the pruned format's (its attention types)

        with torch.device(device):
            self.decoder(model).rotary_emb = rotary_embedding(self.model_type, config)

    def check_supported(self, config) -> None:
        """Refuse a variant of the family the block-by-block code does not handle."""

    # -- one block, one sub-module at a time (DecoderStack) ---------------------------------------
    def embed(self, model, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(model)(ids)

    def position_embeddings(self, model, embeds: torch.Tensor, position_ids: torch.Tensor):
        """(cos, sin), or {layer type: (cos, sin)} for a family with one RoPE per attention type (Gemma 3's
        local and global bases, OLMo 3)."""
        from ..modeling.modeling_hubprune import rope  # what the pruned format's forward computes

        return rope(self.decoder(model).rotary_emb, embeds, position_ids)

    def final(self, model, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states -> the head's input."""
        return self.decoder(model).norm(hidden)

    def run_attention(self, layer, hidden: torch.Tensor, inputs, mask) -> torch.Tensor:
        """The attention branch's output, its norms included (not added to the residual)."""
        before = self.attention_norms[0]
        out = layer.self_attn(hidden_states=getattr(layer, before)(hidden) if before else hidden, attention_mask=mask,
                              position_ids=inputs.position_ids, position_embeddings=inputs.position_embeddings)[0]
        return self.attention_branch_output(layer, out)

    def attention_branch_output(self, layer, out: torch.Tensor) -> torch.Tensor:
        """What the attention branch adds to the residual, given its output projection's output: the norm
        after the attention applied, where the family has one (OLMo 2/3, Gemma 3)."""
        after = self.attention_norms[1]
        return getattr(layer, after)(out) if after else out

    def run_mlp(self, layer, hidden: torch.Tensor, params: dict | None) -> torch.Tensor:
        before, after = self.mlp_norms
        normed = getattr(layer, before)(hidden) if before else hidden
        if params is None:
            out = layer.mlp(normed)
        else:
            out = functional_call(layer.mlp, {n.removeprefix(self.mlp_prefix): t for n, t in params.items()}, (normed,))
        return getattr(layer, after)(out) if after else out

    def logits(self, model, head_input: torch.Tensor) -> torch.Tensor:
        """The head on the final norm's output (Gemma's final soft-capping included)."""
        from ..modeling.modeling_hubprune import soft_cap

        return soft_cap(model.lm_head(head_input), model.config)

    def has_mlp(self, layer) -> bool:
        return getattr(layer, "mlp", None) is not None


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
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return kv_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def value_columns(self, config, groups: list[list[int]]) -> torch.Tensor:
        """The o_proj input columns of the kept value channels, in the pruned layout (head-major)."""
        kv_heads, head_dim = self.value_groups(config)
        heads_per_group = config.num_attention_heads // kv_heads
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


def _prefixes(*modules: str | None) -> tuple[str, ...]:
    """Weight-name prefixes of the named sub-modules (None: no such module)."""
    return tuple(m + "." for m in modules if m)
