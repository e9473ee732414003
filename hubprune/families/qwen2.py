from .base import Family


class Qwen2Family(Family):
    """Qwen2 / Qwen2.5 (q/k/v biases; sliding window from layer `max_window_layers` on)."""

    model_type = "qwen2"
    pruned_class_prefix = "Qwen2"

    def remap_layer_fields(self, config_dict, source_config, kept_layers):
        super().remap_layer_fields(config_dict, source_config, kept_layers)
        # Layers below max_window_layers use full attention: count how many of those survive.
        config_dict["max_window_layers"] = sum(l < source_config.max_window_layers for l in kept_layers)
