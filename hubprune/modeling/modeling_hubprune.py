# A structurally pruned causal LM written by hubprune.
#
# This file is copied into every exported model folder and is loaded with `trust_remote_code=True`.
# It depends only on torch and transformers (>= 5.24, < 6). It reuses the source family's own
# attention, MLP, RMSNorm and rotary modules from transformers, so attention runs through the same
# kernels (SDPA / flash / flex) as the stock model. What differs from the stock model:
#   1. each decoder block reads its own structure from `config.block_configs[i]`:
#      - `attention.no_op`: no attention and none of its branch's norms (_BRANCH_NORMS); the block adds
#        nothing to the residual there, and the KV cache holds a dummy entry for it (see
#        configuration_hubprune.py);
#      - `ffn.no_op`: no MLP and none of its branch's norms;
#      - `ffn.intermediate_size`: this block's own FFN width;
#      - `attention.v_head_dim` (optional): fewer value channels per head than query/key channels
#        (v_proj and o_proj narrowed; queries, keys, their norms and RoPE unchanged), see
#        _value_pruned_forward;
#      - `residual` (optional, SliceGPT): the residual stream is rotated and sliced. The block reads
#        `input` channels, its attention writes `middle` channels and its MLP `output` channels; two
#        shortcut matrices (attn_shortcut_Q [input, middle], mlp_shortcut_Q [middle, output]) carry the
#        residual from one basis to the next, and the norms' weights are folded into the linear layers
#        that follow them (FusedRMSNorm). The embeddings have the first block's input width and the head
#        reads the last block's output width;
#   2. removed whole blocks are simply absent (layers renumbered).
import copy
import importlib
import sys
from collections.abc import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.utils.deprecation import deprecate_kwarg

from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.opt.modeling_opt import OPTForCausalLM, OPTModel

from . import configuration_hubprune
from .configuration_hubprune import FAMILIES

# The norms inside each residual branch: ((before, after) the attention, (before, after) the MLP). A
# skipped sub-module has neither. Families not listed are pre-norm (Llama).
_PRE_NORM = (("input_layernorm", None), ("post_attention_layernorm", None))
_BRANCH_NORMS = {
    "olmo2": ((None, "post_attention_layernorm"), (None, "post_feedforward_layernorm")),
    "olmo3": ((None, "post_attention_layernorm"), (None, "post_feedforward_layernorm")),
    "gemma3_text": (("input_layernorm", "post_attention_layernorm"),
                    ("pre_feedforward_layernorm", "post_feedforward_layernorm")),
}
# Families whose embeddings are scaled by sqrt(hidden_size) (the stock <prefix>TextScaledWordEmbedding).
_SCALED_EMBEDDINGS = ("gemma3_text",)


def _stock(family: str, name: str):
    """The stock transformers class `<Family><name>` (e.g. LlamaAttention)."""
    module, prefix, _ = FAMILIES[family]
    return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), prefix + name)


def _family(config) -> str:
    return config.model_type.removeprefix("hubprune_")


def _attend(self, query_states, key_states, value_states, attention_mask, cache, input_shape, *, dropout: float,
            scaling: float, **kwargs):
    """KV-cache update, the configured attention kernel, heads merged: shared by the value-pruned forwards."""
    stock = sys.modules[type(self).__mro__[1].__module__]  # the family's eager_attention_forward
    if cache is not None:
        key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        self.config._attn_implementation, stock.eager_attention_forward
    )
    attn_output, attn_weights = attention_interface(
        self,
        query_states,
        key_states,
        value_states,
        attention_mask,
        dropout=dropout if self.training else 0.0,
        scaling=scaling,
        **kwargs,
    )
    return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


def _value_pruned_forward(
    self,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    cache: Cache | None = None,
    **kwargs,
):
    """The stock attention forward with `v_head_dim` value channels per head instead of `head_dim`.

    Attention scores and RoPE use the untouched queries and keys; each head's output has v_head_dim
    channels, so o_proj reads num_attention_heads * v_head_dim inputs. SDPA (math / memory-efficient)
    and eager attention accept a value width different from the query width; flash-attention does not."""
    stock = sys.modules[type(self).__mro__[1].__module__]  # the family's apply_rotary_pos_emb
    input_shape = hidden_states.shape[:-1]
    if hasattr(self, "qkv_proj"):  # Phi-3: fused q / k / v rows
        qkv = self.qkv_proj(hidden_states)
        q_end = self.config.num_attention_heads * self.head_dim
        k_end = q_end + self.config.num_key_value_heads * self.head_dim
        query_states, key_states, value_states = qkv[..., :q_end], qkv[..., q_end:k_end], qkv[..., k_end:]
    else:
        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)
    # q/k norms (Qwen3, Gemma 3: per head; OLMo 2/3: over the whole projection) act on queries and keys
    # only, so narrowing the values leaves them intact.
    per_head = getattr(self, "q_norm", None) is not None and self.q_norm.weight.shape[0] == self.head_dim
    if getattr(self, "q_norm", None) is not None and not per_head:
        query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
    query_states = query_states.view(*input_shape, -1, self.head_dim)
    key_states = key_states.view(*input_shape, -1, self.head_dim)
    if per_head:
        query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
    query_states, key_states = query_states.transpose(1, 2), key_states.transpose(1, 2)
    value_states = value_states.view(*input_shape, -1, self.v_head_dim).transpose(1, 2)
    if getattr(self, "use_rope", True):  # SmolLM3's NoPE layers have use_rope = 0
        cos, sin = position_embeddings
        query_states, key_states = stock.apply_rotary_pos_emb(query_states, key_states, cos, sin)
    sliding_window = getattr(self, "sliding_window", getattr(self.config, "sliding_window", None))
    softcap = {"softcap": self.attn_logit_softcapping} if getattr(self, "attn_logit_softcapping", None) else {}
    attn_output, attn_weights = _attend(self, query_states, key_states, value_states, attention_mask, cache,
                                        input_shape, dropout=getattr(self, "attention_dropout", 0.0),
                                        scaling=self.scaling, sliding_window=sliding_window, **softcap, **kwargs)
    return self.o_proj(attn_output), attn_weights


def _opt_value_pruned_forward(
    self,
    hidden_states: torch.Tensor,
    cache: Cache | None = None,
    attention_mask: torch.Tensor | None = None,
    output_attentions: bool = False,
    **kwargs,
):
    """OPT's attention forward with `v_head_dim` value channels per head (see _value_pruned_forward)."""
    bsz, tgt_len, _ = hidden_states.size()
    query_states = (self.q_proj(hidden_states) * self.scaling).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
    key_states = self.k_proj(hidden_states).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
    value_states = self.v_proj(hidden_states).view(bsz, -1, self.num_heads, self.v_head_dim).transpose(1, 2)
    # scaling 1.0: the queries are scaled above, as in the stock OPT attention
    attn_output, attn_weights = _attend(self, query_states, key_states, value_states, attention_mask, cache,
                                        (bsz, tgt_len), dropout=self.dropout, scaling=1.0, **kwargs)
    return self.out_proj(attn_output), attn_weights


def _value_pruned_attention(family: str, config, layer_idx: int, v_head_dim: int) -> nn.Module:
    """The family's stock attention with v_proj (or the value rows of qkv_proj) and o_proj narrowed."""
    stock = _stock(family, "Attention")
    forward = _opt_value_pruned_forward if family == "opt" else _value_pruned_forward
    cls = type(f"HubPrune{FAMILIES[family][1]}ValuePrunedAttention", (stock,), {"forward": forward})
    attention = cls(config=config, layer_idx=layer_idx)
    attention.v_head_dim = v_head_dim
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    values = kv_heads * v_head_dim
    if hasattr(attention, "qkv_proj"):
        qk = (config.num_attention_heads + kv_heads) * attention.head_dim
        attention.qkv_proj = nn.Linear(config.hidden_size, qk + values, bias=attention.qkv_proj.bias is not None)
    else:
        attention.v_proj = nn.Linear(config.hidden_size, values, bias=attention.v_proj.bias is not None)
    output = "out_proj" if family == "opt" else "o_proj"
    setattr(attention, output, nn.Linear(config.num_attention_heads * v_head_dim, config.hidden_size,
                                         bias=getattr(attention, output).bias is not None))
    return attention


class FusedRMSNorm(nn.Module):
    """An RMSNorm whose weight was folded into the linear layers that read its output (SliceGPT).

    It divides by the root mean square over `norm_dim`, the source model's hidden size, even when it
    reads a residual stream sliced to fewer channels: the rotation before the slicing preserves norms,
    so this is the full-width norm of the kept components (the reference's RMSN does the same)."""

    def __init__(self, norm_dim: int, eps: float):
        super().__init__()
        self.norm_dim = norm_dim
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).sum(-1, keepdim=True) / self.norm_dim
        return (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(input_dtype)


# The linear layers that read the residual stream, and those that write to it (by attribute name).
_READS_RESIDUAL = ("q_proj", "k_proj", "v_proj", "qkv_proj", "gate_proj", "up_proj", "gate_up_proj")
_WRITES_RESIDUAL = ("o_proj", "down_proj")


def _resize_residual(module: nn.Module, input_width: int, output_width: int) -> None:
    """Give `module`'s residual-facing linear layers the sliced widths (the other side unchanged)."""
    for name, child in list(module.named_children()):
        if name in _READS_RESIDUAL:
            setattr(module, name, nn.Linear(input_width, child.out_features, bias=child.bias is not None))
        elif name in _WRITES_RESIDUAL:
            setattr(module, name, nn.Linear(child.in_features, output_width, bias=child.bias is not None))


def _residual_ends(config) -> tuple[int, int]:
    """Width of the embeddings and of the head's input: the hidden size unless the residual is sliced."""
    first, last = config.block_configs[0].get("residual"), config.block_configs[-1].get("residual")
    return (first["input"] if first else config.hidden_size), (last["output"] if last else config.hidden_size)


def _shortcut(residual: torch.Tensor, rotation: torch.Tensor | None) -> torch.Tensor:
    return residual if rotation is None else residual @ rotation


class HubPruneDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        family = _family(config)
        block = config.block_configs[layer_idx]
        sliced = block.get("residual")
        if sliced:
            if block["attention"]["no_op"] or block["ffn"]["no_op"] or "v_head_dim" in block["attention"]:
                raise ValueError("a block with a sliced residual must keep its whole attention and MLP")
            rms_norm = FusedRMSNorm
        else:
            rms_norm = _stock(family, "RMSNorm")
        self.hidden_size = config.hidden_size
        self.attention_norms, self.mlp_norms = _BRANCH_NORMS.get(family, _PRE_NORM)
        self.self_attn = self.mlp = None
        for name in {n for n in (*self.attention_norms, *self.mlp_norms) if n}:
            setattr(self, name, None)
        self.attn_shortcut_Q = self.mlp_shortcut_Q = None
        if not block["attention"]["no_op"]:
            for name in filter(None, self.attention_norms):
                setattr(self, name, rms_norm(config.hidden_size, eps=config.rms_norm_eps))
            v_head_dim = block["attention"].get("v_head_dim")
            if v_head_dim is None:
                self.self_attn = _stock(family, "Attention")(config=config, layer_idx=layer_idx)
            else:
                self.self_attn = _value_pruned_attention(family, config, layer_idx, v_head_dim)
        if not block["ffn"]["no_op"]:
            # The stock MLP reads its width from the config: give it a copy with this block's width.
            mlp_config = copy.copy(config)
            mlp_config.intermediate_size = block["ffn"]["intermediate_size"]
            for name in filter(None, self.mlp_norms):
                setattr(self, name, rms_norm(config.hidden_size, eps=config.rms_norm_eps))
            self.mlp = _stock(family, "MLP")(mlp_config)
        if sliced:
            widths = sliced["input"], sliced["middle"], sliced["output"]
            _resize_residual(self.self_attn, widths[0], widths[1])
            _resize_residual(self.mlp, widths[1], widths[2])
            self.attn_shortcut_Q = nn.Parameter(torch.eye(widths[0], widths[1]))
            self.mlp_shortcut_Q = nn.Parameter(torch.eye(widths[1], widths[2]))

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            residual = hidden_states
            hidden_states, _ = self.self_attn(
                hidden_states=self._norm(self.attention_norms[0], hidden_states),
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
            hidden_states = _shortcut(residual, self.attn_shortcut_Q) + self._norm(self.attention_norms[1], hidden_states)
        if self.mlp is not None:
            residual = hidden_states
            hidden_states = self.mlp(self._norm(self.mlp_norms[0], hidden_states))
            hidden_states = _shortcut(residual, self.mlp_shortcut_Q) + self._norm(self.mlp_norms[1], hidden_states)
        return hidden_states

    def _norm(self, name: str | None, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states if name is None else getattr(self, name)(hidden_states)


def rotary_embedding(family: str, config) -> nn.Module:
    """The family's rotary embedding. One with a RoPE per attention type is built for the attention
    types still present (a block without attention has none)."""
    source_types = getattr(config, "layer_types", None) or []
    types = [t for t in source_types if t in ("full_attention", "sliding_attention")]
    if set(types) != set(source_types):
        config = copy.copy(config)
        config.layer_types = types or ["full_attention"]
    return _stock(family, "RotaryEmbedding")(config=config)


def rope(rotary: nn.Module, hidden_states: torch.Tensor, position_ids: torch.Tensor):
    """(cos, sin), or {attention type: (cos, sin)} for a family with one RoPE per type (Gemma 3, OLMo 3)."""
    if isinstance(rotary.rope_type, dict):
        return {kind: rotary(hidden_states, position_ids, kind) for kind in rotary.rope_type}
    return rotary(hidden_states, position_ids=position_ids)


def soft_cap(logits: torch.Tensor, config) -> torch.Tensor:
    """Gemma's final logit soft-capping, when the config sets one."""
    cap = getattr(config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap


class HubPrunePreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HubPruneDecoderLayer"]
    # Same attention backends as the stock model; without these flags transformers would silently
    # fall back to eager attention (slower, and unfair in dense-vs-pruned speed comparisons).
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module):
        """The stock initialisation, plus what the stock classes of some families add: the buffers of a
        RoPE per attention type and of scaled embeddings (non-persistent, so computed at every load)."""
        super()._init_weights(module)
        if "RotaryEmbedding" in type(module).__name__ and isinstance(getattr(module, "rope_type", None), dict):
            for kind, rope_type in module.rope_type.items():
                rope_init_fn = (module.compute_default_rope_parameters if rope_type == "default"
                                else ROPE_INIT_FUNCTIONS[rope_type])
                inv_freq, _ = rope_init_fn(module.config, layer_type=kind)
                init.copy_(getattr(module, f"{kind}_inv_freq"), inv_freq)
                init.copy_(getattr(module, f"{kind}_original_inv_freq"), inv_freq)
        elif hasattr(module, "scalar_embed_scale"):
            init.constant_(module.embed_scale, module.scalar_embed_scale)

    @property
    def _supports_flash_attn(self) -> bool:
        """flash-attention needs the same head size for queries, keys and values, so a model with
        value-pruned layers (`v_head_dim`) does not qualify; transformers then refuses it at load time
        instead of failing in the first forward."""
        blocks = getattr(getattr(self, "config", None), "block_configs", None) or []
        return not any("v_head_dim" in b["attention"] and not b["attention"]["no_op"] for b in blocks)


class HubPruneModel(HubPrunePreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        family = _family(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        embedding_width, _ = _residual_ends(config)
        if family in _SCALED_EMBEDDINGS:
            self.embed_tokens = _stock(family, "TextScaledWordEmbedding")(
                config.vocab_size, embedding_width, self.padding_idx, embed_scale=config.hidden_size**0.5)
        else:
            self.embed_tokens = nn.Embedding(config.vocab_size, embedding_width, self.padding_idx)
        self.layers = nn.ModuleList(
            [HubPruneDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        sliced = "residual" in config.block_configs[-1]
        self.norm = (FusedRMSNorm if sliced else _stock(family, "RMSNorm"))(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = rotary_embedding(family, config)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)  # attention-free layers get DummyLayer entries
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "cache": cache,
            "position_ids": position_ids,
        }
        layer_types = self.config.layer_types
        masks = {}
        if "full_attention" in layer_types:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        if "sliding_attention" in layer_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)

        hidden_states = inputs_embeds
        position_embeddings = rope(self.rotary_emb, hidden_states, position_ids)
        for layer_idx, decoder_layer in enumerate(self.layers):
            kind = layer_types[layer_idx]
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=masks.get(kind),
                position_embeddings=(position_embeddings.get(kind) if isinstance(position_embeddings, dict)
                                     else position_embeddings),
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class HubPruneForCausalLM(HubPrunePreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = HubPruneModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(_residual_ends(config)[1], config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = soft_cap(self.lm_head(hidden_states), self.config)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)


# One class per family so that `auto_map` can name the right config class for each: the model with its
# head (AutoModelForCausalLM) and the base model (AutoModel, e.g. vLLM's Transformers backend). OPT's
# are below.
def _family_class(base: type, name: str, config_class: type) -> type:
    return type(name, (base,), {"__module__": __name__, "__qualname__": name, "config_class": config_class})


for _model_type, (_, _prefix, _) in FAMILIES.items():
    if _model_type != "opt":
        _config_class = getattr(configuration_hubprune, f"HubPrune{_prefix}Config")
        for _base, _suffix in ((HubPruneForCausalLM, "ForCausalLM"), (HubPruneModel, "Model")):
            globals()[f"HubPrune{_prefix}{_suffix}"] = _family_class(_base, f"HubPrune{_prefix}{_suffix}", _config_class)


# -- OPT --------------------------------------------------------------------------------------------------
class HubPruneOPTDecoderLayer(GradientCheckpointingLayer):
    """OPT's decoder layer reading its structure from `block_configs` (like HubPruneDecoderLayer)."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        block = config.block_configs[layer_idx]
        norm = lambda: nn.LayerNorm(config.hidden_size, elementwise_affine=config.layer_norm_elementwise_affine)  # noqa: E731
        self.do_layer_norm_before = config.do_layer_norm_before
        self.dropout = config.dropout
        self.activation_fn = ACT2FN[config.activation_function]
        self.self_attn = self.self_attn_layer_norm = None
        self.fc1 = self.fc2 = self.final_layer_norm = None
        if not block["attention"]["no_op"]:
            v_head_dim = block["attention"].get("v_head_dim")
            if v_head_dim is None:
                self.self_attn = _stock("opt", "Attention")(config=config, layer_idx=layer_idx)
            else:
                self.self_attn = _value_pruned_attention("opt", config, layer_idx, v_head_dim)
            self.self_attn_layer_norm = norm()
        if not block["ffn"]["no_op"]:
            width = block["ffn"]["intermediate_size"]
            self.fc1 = nn.Linear(config.hidden_size, width, bias=config.enable_bias)
            self.fc2 = nn.Linear(width, config.hidden_size, bias=config.enable_bias)
            self.final_layer_norm = norm()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            residual = hidden_states
            if self.do_layer_norm_before:
                hidden_states = self.self_attn_layer_norm(hidden_states)
            hidden_states, _ = self.self_attn(
                hidden_states=hidden_states,
                cache=cache,
                position_ids=position_ids,
                attention_mask=attention_mask,
                **kwargs,
            )
            hidden_states = residual + nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
            if not self.do_layer_norm_before:
                hidden_states = self.self_attn_layer_norm(hidden_states)
        if self.fc1 is not None:
            residual = hidden_states
            if self.do_layer_norm_before:
                hidden_states = self.final_layer_norm(hidden_states)
            hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
            hidden_states = residual + nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
            if not self.do_layer_norm_before:
                hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


def _opt_layers(config) -> nn.ModuleList:
    return nn.ModuleList([HubPruneOPTDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])


class HubPruneOPTForCausalLM(OPTForCausalLM):
    """The stock OPT model (learned positions, decoder, head) with HubPruneOPTDecoderLayer blocks."""

    config_class = configuration_hubprune.HubPruneOPTConfig
    _no_split_modules = ["HubPruneOPTDecoderLayer"]

    def __init__(self, config):
        super().__init__(config)
        self.model.decoder.layers = _opt_layers(config)


class HubPruneOPTModel(OPTModel):
    """The stock OPT base model (no head) with HubPruneOPTDecoderLayer blocks."""

    config_class = configuration_hubprune.HubPruneOPTConfig
    _no_split_modules = ["HubPruneOPTDecoderLayer"]

    def __init__(self, config):
        super().__init__(config)
        self.decoder.layers = _opt_layers(config)


__all__ = [f"HubPrune{prefix}{suffix}" for _, prefix, _ in FAMILIES.values() for suffix in ("ForCausalLM", "Model")]
