"""The pruned architecture. `configuration_hubprune.py` and `modeling_hubprune.py` are copied verbatim
into every exported model folder (remote code); they import nothing from hubprune. The classes of each
family are found by the names its adapter gives (`families.Family.pruned_config_class`, ...)."""
from pathlib import Path

from ..families import FAMILIES
from . import configuration_hubprune, modeling_hubprune

OWN_CLASSES = {  # model_type -> (config class, model class): the pruned format, loaded with these classes
    family.pruned_model_type: (getattr(configuration_hubprune, family.pruned_config_class),
                               getattr(modeling_hubprune, family.pruned_model_class))
    for family in FAMILIES.values()
}
BASE_CLASSES = {  # model_type -> the base model class (no head), for AutoModel
    family.pruned_model_type: getattr(modeling_hubprune, family.pruned_base_class) for family in FAMILIES.values()
}


def register_own_classes() -> None:
    """Make transformers' Auto classes load the pruned format with this package's classes, so that a
    hubprune output never needs (or runs) the Python files in its folder."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    for model_type, (config, model) in OWN_CLASSES.items():
        AutoConfig.register(model_type, config, exist_ok=True)
        AutoModelForCausalLM.register(config, model, exist_ok=True)
        AutoModel.register(config, BASE_CLASSES[model_type], exist_ok=True)


REMOTE_CODE_FILES = tuple(Path(__file__).parent / name for name in ("configuration_hubprune.py", "modeling_hubprune.py"))

__all__ = ["BASE_CLASSES", "OWN_CLASSES", "REMOTE_CODE_FILES", "register_own_classes"]
