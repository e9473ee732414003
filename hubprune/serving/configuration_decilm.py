# Configuration of a hubprune model exported for vLLM's native DeciLM ("nemotron-nas") model class.
#
# This file is copied into every vLLM export and loaded with `trust_remote_code=True`: no transformers
# release registers "nemotron-nas", and vLLM reads the config through transformers. It depends only on
# transformers, and must keep loading in the versions vLLM pins (checked by `make test-serve`).
#
# `block_configs` holds one entry per decoder block,
#     {"attention": {"no_op": bool, "n_heads_in_group": int},
#      "ffn": {"no_op": bool, "intermediate_size": int}}
# and vLLM reads it by attribute (`block.ffn.intermediate_size`), so the entries become dicts that also
# answer attribute access. An entry without `ffn_mult` is read as an exact width (with `ffn_mult`, vLLM
# derives the width from it and rounds it up to a multiple of 256).
from transformers import LlamaConfig


class BlockConfig(dict):
    """A dict whose keys read as attributes (a missing key is an AttributeError, so `hasattr` works)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _block(entry):
    return BlockConfig({k: BlockConfig(v) if isinstance(v, dict) else v for k, v in dict(entry).items()})


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [_block(entry) for entry in (block_configs or [])]
