import torch
from torch.func import functional_call

from ..errors import UnsupportedArchitectureError
from .base import Family


class OPTFamily(Family):
    """OPT (Zhang et al., 2022): learned positions (offset 2), LayerNorms with biases, biased q/k/v/out,
    a ReLU MLP fc1 -> fc2 without a module of its own, multi-head attention (no GQA)."""

    model_type = "opt"
    pruned_class_prefix = "OPT"
    layers_prefix = "model.decoder.layers."
    attention_norms = ("self_attn_layer_norm", None)
    mlp_prefix = ""
    mlp_weights = ("fc1.", "fc2.")
    mlp_norms = ("final_layer_norm", None)
    ffn_rows = ("fc1",)
    ffn_cols = ("fc2",)
    value_cols = "self_attn.out_proj"
    residual_slicing = False  # LayerNorm with mean and bias: SliceGPT would need its centring step, not done here

    def tiny_config(self):  # learned positions, LayerNorms, biases everywhere, ReLU; multi-head (2 heads of 32)
        from transformers import OPTConfig

        return OPTConfig(vocab_size=128, hidden_size=64, ffn_dim=96, num_hidden_layers=5, num_attention_heads=2,
                         max_position_embeddings=64, word_embed_proj_dim=64, enable_bias=True,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)

    def ffn_width(self, config) -> int:
        return config.ffn_dim

    def set_ffn_width(self, config_dict: dict, width: int) -> None:
        config_dict["ffn_dim"] = width

    def decoder(self, model):
        return model.model.decoder

    def rebuild_buffers(self, model, config, device) -> None:
        pass  # learned positions are weights; nothing non-persistent

    def check_supported(self, config) -> None:
        if not config.do_layer_norm_before:
            raise UnsupportedArchitectureError(
                "OPT with post-attention layer norm (do_layer_norm_before=False, e.g. opt-350m) is not supported; "
                "the other OPT sizes are")

    def embed(self, model, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        decoder = self.decoder(model)
        embeds = decoder.embed_tokens(ids)
        if decoder.project_in is not None:
            embeds = decoder.project_in(embeds)
        positions = decoder.embed_positions(None, 0, position_ids=position_ids.expand(ids.shape[0], -1))
        return embeds + positions

    def position_embeddings(self, model, embeds, position_ids):
        return None

    def final(self, model, hidden: torch.Tensor) -> torch.Tensor:
        decoder = self.decoder(model)
        if decoder.final_layer_norm is not None:
            hidden = decoder.final_layer_norm(hidden)
        if decoder.project_out is not None:
            hidden = decoder.project_out(hidden)
        return hidden

    def run_attention(self, layer, hidden, inputs, mask):
        return layer.self_attn(hidden_states=layer.self_attn_layer_norm(hidden), attention_mask=mask)[0]

    def has_mlp(self, layer) -> bool:
        return getattr(layer, "fc1", None) is not None

    def run_mlp(self, layer, hidden, params):
        """fc2(act(fc1(final_layer_norm(h)))), through the modules so that their hooks see the inputs."""
        params = params or {}

        def linear(name: str, x: torch.Tensor) -> torch.Tensor:
            local = {n[len(name) + 1:]: t for n, t in params.items() if n.startswith(name + ".")}
            module = getattr(layer, name)
            return functional_call(module, local, (x,)) if local else module(x)

        return linear("fc2", layer.activation_fn(linear("fc1", layer.final_layer_norm(hidden))))
