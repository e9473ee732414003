"""Typed settings declared once: a dataclass field made with `setting()` carries its help text, bounds
and choices, and everything else is generated from it: the command-line flags (`add_arguments`), the
checks of values from a command line, a recipe or a library call (`check`), and the command line that
repeats a run (`as_flags`).

Dataclasses rather than pydantic: settings are recorded with `dataclasses.asdict`, the command line is
checked before torch is imported (this module imports nothing heavy), and the rules needed (a type, a
lower bound, a set of choices, a converter) fit in this one small module.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field
from functools import cache

from .errors import InvalidOptionError


def setting(default=MISSING, *, help: str, flag: str | None = None, metavar: str | None = None,  # noqa: A002
            choices: tuple | None = None, minimum: float | None = None, above: float | None = None,
            convert: Callable | None = None, group: str | None = None, cli: bool = True,
            default_text: str | None = None, default_factory=MISSING) -> Field:
    """A dataclass field with its command-line face.

    `flag`: the flag without its dashes [the name with dashes]; `minimum`: the smallest allowed value;
    `above`: a bound the value must exceed; `convert`: applied to a value before it is checked (from a
    command line and a recipe alike); `group`: the --help section; `cli=False`: not a flag (set by the
    program, or a container); `default_text`: the default as --help shows it [the default]."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "choices": choices, "minimum": minimum,
                "above": above, "convert": convert, "group": group, "cli": cli, "default_text": default_text}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def fields(cls: type) -> list[Field]:
    """The settings of `cls` (fields made with `setting`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def cli_fields(cls: type) -> list[Field]:
    return [f for f in fields(cls) if f.metadata["cli"]]


def flag(f: Field) -> str:
    return "--" + (f.metadata["flag"] or f.name.replace("_", "-"))


def dest(f: Field) -> str:
    """The attribute the parsed command line holds the setting in (unique per parser, like the flag)."""
    return flag(f)[2:].replace("-", "_")


def default(f: Field):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def kind(cls: type, name: str) -> tuple[type, bool]:
    """(base type, optional) of a field: `int | None` -> (int, True), `list[str]` -> (list, False)."""
    hint = _hints(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    return typing.get_origin(base) or base, optional


def check_value(cls: type, f: Field, value, where: str = ""):
    """`value` converted and checked against the field's type, bounds and choices; the checked value."""
    name = where or flag(f)
    meta = f.metadata
    if value is None:
        if kind(cls, f.name)[1] or default(f) is None:
            return None
        raise InvalidOptionError(f"{name} needs a value")
    if meta["convert"] is not None:
        value = meta["convert"](value)
    base, _ = kind(cls, f.name)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, base) or (base in (int, float) and isinstance(value, bool)):
        raise InvalidOptionError(f"{name} {value!r}: expected {_type_word(base)}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise InvalidOptionError(f"{name} {value!r}: choose {', '.join(map(str, meta['choices']))}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise InvalidOptionError(f"{name} {value!r}: must be at least {meta['minimum']:g}")
    if meta["above"] is not None and not value > meta["above"]:
        raise InvalidOptionError(f"{name} {value!r}: must be greater than {meta['above']:g}")
    return value


def check(instance) -> None:
    """Check every setting of a dataclass instance in place (call it from `__post_init__`)."""
    cls = type(instance)
    for f in fields(cls):
        object.__setattr__(instance, f.name, check_value(cls, f, getattr(instance, f.name)))


def build(cls: type, values: dict, where: str):
    """`cls(**values)` with an unknown key refused by name (`where` says what held the values)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InvalidOptionError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(names))})")
    return cls(**values)


def _type_word(base: type) -> str:
    return {int: "an integer", float: "a number", str: "text", bool: "true or false",
            list: "a list"}.get(base, base.__name__)


def csv(value: str) -> list[str]:
    """A comma-separated command-line list; a list (from a recipe) passes as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _help(f: Field, defaults: str | None = None) -> str:
    meta = f.metadata
    shown = defaults if defaults is not None else meta["default_text"]
    if shown is None:
        value = default(f)
        shown = None if value is None or value is False or value == [] else ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return (meta["help"] + (f" [{shown}]" if shown else "")).replace("%", "%%")  # argparse formats help with %


def add_argument(group, cls: type, f: Field, *, unset: bool = False, defaults: str | None = None) -> None:
    """The flag of one setting. `unset`: the flag's default is None, so that a value not given on the
    command line stays unset and the owner's default applies (method options)."""
    base, _ = kind(cls, f.name)
    meta = f.metadata
    value = None if unset else default(f)
    kwargs = {"dest": dest(f), "help": _help(f, defaults)}
    if base is bool:
        kwargs.update(action="store_const", const=True, default=value)
    else:
        kwargs.update(default=value, metavar=meta["metavar"])
        if base is list:
            kwargs["type"] = csv
        elif base in (int, float):
            kwargs["type"] = base
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
    group.add_argument(flag(f), **kwargs)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                  groups: dict | None = None) -> None:
    """Flags for every command-line setting of `cls`, in its help section (`groups` caches the
    sections of a parser by title)."""
    groups = {} if groups is None else groups
    for f in cli_fields(cls):
        if f.name in skip:
            continue
        title = f.metadata["group"] or "options"
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        add_argument(groups[title], cls, f)


def from_args(cls: type, args: argparse.Namespace) -> dict:
    """The values of `cls`'s command-line settings that the parser holds."""
    return {f.name: getattr(args, dest(f)) for f in cli_fields(cls) if hasattr(args, dest(f))}


def changed(cls: type, values: dict) -> dict:
    """The settings in `values` that differ from `cls`'s defaults (what a repeat of the run must say)."""
    by_name = {f.name: f for f in fields(cls)}
    return {k: v for k, v in values.items() if k in by_name and v != default(by_name[k])}


def as_flags(cls: type, values: dict) -> list[str]:
    """Command-line arguments giving `values` (settings of `cls`; booleans as bare flags)."""
    by_name = {f.name: f for f in cli_fields(cls)}
    args = []
    for key, value in values.items():
        if key not in by_name or value is None or value is False:
            continue
        args.append(flag(by_name[key]))
        if value is not True:
            args.append(",".join(map(str, value)) if isinstance(value, list)
                        else f"{value:g}" if isinstance(value, float) else str(value))
    return args
