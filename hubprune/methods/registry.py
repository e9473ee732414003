from __future__ import annotations

import difflib

from ..errors import UnknownMethodError
from .base import PruningMethod

METHODS: dict[str, type[PruningMethod]] = {}


def register(cls: type[PruningMethod]) -> type[PruningMethod]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> PruningMethod:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownMethodError(f"unknown method '{name}'{hint}. Available: {', '.join(sorted(METHODS))}")
    return METHODS[name]()
