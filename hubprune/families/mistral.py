from .base import Family


class MistralFamily(Family):
    """Mistral (sliding-window attention on every layer when `sliding_window` is set)."""

    model_type = "mistral"
    pruned_class_prefix = "Mistral"
