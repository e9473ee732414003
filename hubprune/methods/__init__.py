"""Pruning methods, one module each, registered by name."""
from . import blockdrop, blockpruner, evopress, fasp, manual, slicegpt, twossp  # noqa: F401 - registers the methods
from .base import PruneContext, PruningMethod
from .registry import METHODS, get_method, register

__all__ = ["METHODS", "PruneContext", "PruningMethod", "get_method", "register"]
