from .base import Family


class MistralFamily(Family):
    """Mistral (sliding-window attention on every layer when `sliding_window` is set)."""

    model_type = "mistral"
    pruned_class_prefix = "Mistral"

    def tiny_config(self):  # GQA, a sliding window on every layer
        from transformers import MistralConfig

        return MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                             num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
                             pad_token_id=0, bos_token_id=1, eos_token_id=2)
