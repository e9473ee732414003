from .base import Family


class Qwen2Family(Family):
    """Qwen2 / Qwen2.5 (q/k/v biases; sliding window from layer `max_window_layers` on)."""

    model_type = "qwen2"
    pruned_class_prefix = "Qwen2"
    evopress_seq_len = 2048

    def tiny_config(self):  # q/k/v biases, mixed full and sliding layers, untied head
        from transformers import Qwen2Config

        return Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
                           max_window_layers=2, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2)

    def remap_layer_fields(self, config_dict, source_config, kept_layers):
        super().remap_layer_fields(config_dict, source_config, kept_layers)
        # Layers below max_window_layers use full attention: count how many of those survive.
        config_dict["max_window_layers"] = sum(l < source_config.max_window_layers for l in kept_layers)
