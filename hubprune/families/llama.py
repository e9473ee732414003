from .base import Family


class LlamaFamily(Family):
    """Llama 1/2/3 (incl. GQA), SmolLM, TinyLlama, ..."""

    model_type = "llama"
    pruned_class_prefix = "Llama"
