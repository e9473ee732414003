import torch

from ..errors import UnsupportedArchitectureError
from .base import Family


class Gemma3Family(Family):
    """Gemma 3, text only (`Gemma3ForCausalLM`, model_type gemma3_text): four norms per block (before and
    after the attention, before and after the MLP) of the form x·(1 + w); embeddings scaled by
    sqrt(hidden_size); per-head q/k norms; `query_pre_attn_scalar` sets the attention scale; sliding and
    global layers interleaved (`layer_types`), each type with its own RoPE base."""

    model_type = "gemma3_text"
    pruned_class_prefix = "Gemma3"
    attention_norms = ("input_layernorm", "post_attention_layernorm")
    mlp_norms = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
    residual_slicing = False  # (1 + w) norms and post-norms: SliceGPT's folding does not apply

    def tiny_config(self):  # 4 norms, scaled embeddings, local / global RoPE (linear-scaled global), tied
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
                         "full_attention"],
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
            final_logit_softcapping=30.0, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)

    def rebuild_buffers(self, model, config, device) -> None:
        super().rebuild_buffers(model, config, device)
        embeddings = self.embeddings(model)  # its sqrt(hidden) scale is a non-persistent buffer
        embeddings.embed_scale = torch.tensor(embeddings.scalar_embed_scale, device=device)

    def check_supported(self, config) -> None:
        if getattr(config, "use_bidirectional_attention", False):
            raise UnsupportedArchitectureError(
                "Gemma 3 with bidirectional attention (an embedding model) is not a causal LM; hubprune prunes "
                "Gemma3ForCausalLM checkpoints")
