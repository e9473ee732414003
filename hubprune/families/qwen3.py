from .qwen2 import Qwen2Family


class Qwen3Family(Qwen2Family):
    """Qwen3 (dense): Qwen2's layout without q/k/v biases, with an RMSNorm on each query and key head
    (`q_norm` / `k_norm` over head_dim). Value pruning narrows v_proj / o_proj only, so those norms stay."""

    model_type = "qwen3"
    pruned_class_prefix = "Qwen3"
    head_space_norms = ("self_attn.q_norm", "self_attn.k_norm")

    def tiny_config(self):  # per-head q/k norms, explicit head_dim, mixed full and sliding layers, tied
        from transformers import Qwen3Config

        return Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, use_sliding_window=True,
                           sliding_window=6, max_window_layers=2, tie_word_embeddings=True, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2)
