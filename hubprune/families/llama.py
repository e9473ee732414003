from .base import Family


class LlamaFamily(Family):
    """Llama 1/2/3 (incl. GQA), SmolLM, TinyLlama, ..."""

    model_type = "llama"
    pruned_class_prefix = "Llama"
    evopress_seq_len = 4096

    def tiny_config(self):  # GQA, tied embeddings
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
