import torch

from .base import Family


class Phi3Family(Family):
    """Phi-3 (fused q/k/v and fused gate/up projections; optional sliding window on every layer)."""

    model_type = "phi3"
    pruned_class_prefix = "Phi3"
    evopress_seq_len = 4096
    ffn_rows = ("mlp.gate_up_proj",)
    attention_inputs = ("self_attn.qkv_proj",)

    def tiny_config(self):  # fused q/k/v and gate/up, sliding window
        from transformers import Phi3Config

        return Phi3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                          num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)

    def slice_ffn(self, tensors: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        # gate_up_proj stacks the gate rows [0, F) over the up rows [F, 2F): keep neuron j in both halves.
        width = tensors["mlp.down_proj.weight"].shape[1]
        fused = tensors["mlp.gate_up_proj.weight"]
        keep = keep.to(fused.device)
        out = super().slice_ffn({k: v for k, v in tensors.items() if k != "mlp.gate_up_proj.weight"}, keep)
        out["mlp.gate_up_proj.weight"] = fused.index_select(0, torch.cat([keep, keep + width]))
        return out

    def slice_values(self, tensors: dict[str, torch.Tensor], groups: list[list[int]], config) -> dict[str, torch.Tensor]:
        # qkv_proj stacks q [0, H·d), k [H·d, (H+K)·d) and v [(H+K)·d, (H+2K)·d): keep every q/k row.
        heads, head_dim = config.num_attention_heads, self.value_groups(config)[1]
        qk = (heads + config.num_key_value_heads) * head_dim
        fused = tensors["self_attn.qkv_proj.weight"]
        rows = torch.cat([torch.arange(qk), qk + self.value_row_indices(config, groups)]).to(fused.device)
        out = dict(tensors)
        out["self_attn.qkv_proj.weight"] = fused.index_select(0, rows)
        weight = out[self.value_cols + ".weight"]
        out[self.value_cols + ".weight"] = weight.index_select(1, self.value_columns(config, groups).to(weight.device))
        return out
