from .base import Family
from .olmo2 import Olmo2Family


class Olmo3Family(Olmo2Family):
    """OLMo 3: OLMo 2's post-norm blocks with interleaved sliding-window and full-attention layers
    (`layer_types`), each type with its own RoPE settings."""

    model_type = "olmo3"
    pruned_class_prefix = "Olmo3"
    evopress_seq_len = Family.evopress_seq_len  # OLMo 3 reads 65k tokens (OLMo 2: 4k)

    def tiny_config(self):  # OLMo 2 plus three sliding layers to one full, as in OLMo 3
        from transformers import Olmo3Config

        return Olmo3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
                           layer_types=["sliding_attention"] * 3 + ["full_attention", "sliding_attention"],
                           tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
