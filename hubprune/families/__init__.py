"""Family adapters, keyed by the source `config.model_type` (also by the pruned `hubprune_<type>`)."""
from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from .base import Family
from .gemma3 import Gemma3Family
from .llama import LlamaFamily
from .mistral import MistralFamily
from .olmo2 import Olmo2Family
from .olmo3 import Olmo3Family
from .opt import OPTFamily
from .phi3 import Phi3Family
from .qwen2 import Qwen2Family
from .qwen3 import Qwen3Family
from .smollm3 import SmolLM3Family

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    LlamaFamily(), MistralFamily(), Qwen2Family(), Qwen3Family(), Phi3Family(), OPTFamily(), Gemma3Family(),
    Olmo2Family(), Olmo3Family(), SmolLM3Family())}


def get_family(model_type: str) -> Family:
    family = FAMILIES.get(model_type.removeprefix("hubprune_"))
    if family is None:
        raise UnsupportedArchitectureError(
            f"model type '{model_type}' is not supported; hubprune supports: {', '.join(sorted(FAMILIES))}"
        )
    return family


__all__ = ["FAMILIES", "Family", "get_family"]
