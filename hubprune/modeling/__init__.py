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

OWN_CLASSES = {  # model_type -> (config class, model class): the pruned format, loaded with these classes
    config.model_type: (config, model)
    for config, model in ((HubPruneLlamaConfig, HubPruneLlamaForCausalLM),
                          (HubPruneMistralConfig, HubPruneMistralForCausalLM),
                          (HubPruneQwen2Config, HubPruneQwen2ForCausalLM),
                          (HubPrunePhi3Config, HubPrunePhi3ForCausalLM),
                          (HubPruneOPTConfig, HubPruneOPTForCausalLM))
}


def register_own_classes() -> None:
    """Make transformers' Auto classes load the pruned format with this package's classes, so that a
    hubprune output never needs (or runs) the Python files in its folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for model_type, (config, model) in OWN_CLASSES.items():
        AutoConfig.register(model_type, config, exist_ok=True)
        AutoModelForCausalLM.register(config, model, exist_ok=True)


REMOTE_CODE_FILES = tuple(Path(__file__).parent / name for name in ("configuration_hubprune.py", "modeling_hubprune.py"))

__all__ = [
    "OWN_CLASSES",
    "REMOTE_CODE_FILES",
    "register_own_classes",
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
