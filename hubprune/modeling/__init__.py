"""The pruned architecture. `configuration_hubprune.py` and `modeling_hubprune.py` are copied verbatim
into every exported model folder (remote code); they import nothing from hubprune."""
from pathlib import Path

from .configuration_hubprune import (
    HubPruneLlamaConfig,
    HubPruneMistralConfig,
    HubPruneOPTConfig,
    HubPrunePhi3Config,
    HubPruneQwen2Config,
)
from .modeling_hubprune import (
    HubPruneLlamaForCausalLM,
    HubPruneMistralForCausalLM,
    HubPruneOPTForCausalLM,
    HubPrunePhi3ForCausalLM,
    HubPruneQwen2ForCausalLM,
)

REMOTE_CODE_FILES = tuple(Path(__file__).parent / name for name in ("configuration_hubprune.py", "modeling_hubprune.py"))

__all__ = [
    "REMOTE_CODE_FILES",
    "HubPruneLlamaConfig",
    "HubPruneMistralConfig",
    "HubPruneQwen2Config",
    "HubPrunePhi3Config",
    "HubPruneOPTConfig",
    "HubPruneLlamaForCausalLM",
    "HubPruneMistralForCausalLM",
    "HubPruneQwen2ForCausalLM",
    "HubPrunePhi3ForCausalLM",
    "HubPruneOPTForCausalLM",
]
