"""The method registry: a name -> method class table, filled on first use by importing the method
modules (cheap: they import torch only inside `select`). A method defined elsewhere (a plugin, a
test) joins it with `@register`."""
from __future__ import annotations

import difflib
import importlib

from ..errors import UnknownMethodError
from .base import PruningMethod

BUILTIN = ("twossp", "fasp", "shortgpt", "window", "blockpruner", "evopress", "slicegpt", "manual")  # modules here
_METHODS: dict[str, type[PruningMethod]] = {}
_loaded = False


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    _METHODS[cls.name] = cls
    return cls


def methods() -> dict[str, type[PruningMethod]]:
    """Every registered method by name."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(f"{__package__}.{module}")
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> PruningMethod:
    known = methods()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownMethodError(f"unknown method '{name}'{hint}; available: {', '.join(known)}")
    return known[name]()


def unregister(name: str) -> None:
    """Take a method out of the registry (a plugin unloaded, a test's example method)."""
    _METHODS.pop(name, None)
