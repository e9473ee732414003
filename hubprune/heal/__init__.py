"""Healing after pruning: knowledge distillation of the pruned model from its dense source.

`settings` is light (checked before torch is imported); `teacher` and `train` hold the work."""
from .settings import HealSettings, heal_settings

__all__ = ["HealSettings", "heal_settings"]
