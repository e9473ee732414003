"""Pruning methods: one module each at this level (registered by name), the passes they share in
`compute/`. See CONTRIBUTING.md, "Add a method"."""
from .base import Calibration, Options, Paper, PruneContext, PruningMethod, Selection
from .registry import get_method, methods, register, unregister

__all__ = ["Calibration", "Options", "Paper", "PruneContext", "PruningMethod", "Selection", "get_method", "methods", "register", "unregister"]
