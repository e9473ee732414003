from .base import Family


class Olmo2Family(Family):
    """OLMo 2: the norms sit after each sub-module, inside its residual branch
    (h + norm(attention(h)), h + norm(mlp(h))), and q/k are normalised over the whole projection
    (value pruning leaves q/k alone). No norm before a sub-module, so SliceGPT's folding does not apply."""

    model_type = "olmo2"
    pruned_class_prefix = "Olmo2"
    attention_norms = (None, "post_attention_layernorm")
    mlp_norms = (None, "post_feedforward_layernorm")
    residual_slicing = False  # a norm's weight after the sub-module does not commute with a rotation
    evopress_seq_len = 4096

    def tiny_config(self):  # post-norms, whole-projection q/k norms, GQA, untied
        from transformers import Olmo2Config

        return Olmo2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
