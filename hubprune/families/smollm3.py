from .base import Family


class SmolLM3Family(Family):
    """SmolLM3: Llama's block, with RoPE left out of some layers (`no_rope_layers[i] == 0`: NoPE)."""

    model_type = "smollm3"
    pruned_class_prefix = "SmolLM3"

    def tiny_config(self):  # every second layer without RoPE, GQA, tied
        from transformers import SmolLM3Config

        return SmolLM3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                             num_attention_heads=4, num_key_value_heads=2, no_rope_layer_interval=2,
                             tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)

    def remap_layer_fields(self, config_dict, source_config, kept_layers):
        super().remap_layer_fields(config_dict, source_config, kept_layers)
        config_dict["no_rope_layers"] = [source_config.no_rope_layers[l] for l in kept_layers]
