"""The settings pattern of the three processes (stdlib only): flags, then ``HOTSWAP_*`` variables,
then defaults.

Each process lists its :class:`Option` s once; a default is written once, as the default of the
field of its frozen settings dataclass, and ``--help`` shows it (:func:`add_options`). :func:`resolve`
returns only what a flag or a variable set (the dataclass fills in the rest) and raises
:class:`SettingsError` naming the flag or variable at fault; each ``cli`` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


class SettingsError(ValueError):
    """A flag or variable is missing or malformed; the message names it."""


@dataclasses.dataclass(frozen=True)
class Option:
    field: str  # the settings field it fills
    flag: str | None  # None: a variable only (the operator's flags are kopf's)
    env: str
    help: str
    parse: Callable[[str], Any] = str
    many: bool = False  # a repeatable flag; the variable holds a comma- or space-separated list
    required: bool = False
    default_help: str | None = None  # for a default the code computes (from other variables)

    @property
    def names(self) -> str:
        """How errors and help name it: ``--port / HOTSWAP_PORT``."""
        return f"{self.flag} / {self.env}" if self.flag else self.env


def defaults_of(settings_cls: type) -> dict[str, Any]:
    """The defaults of a settings dataclass, by field: the one place they are written."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def describe_default(option: Option, defaults: Mapping[str, Any]) -> str:
    if option.required:
        return "required"
    if option.default_help is not None:
        return option.default_help
    value = defaults.get(option.field)
    if value is None or value == ():
        return "none"
    return str(value)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option], settings_cls: type) -> None:
    """One argument per option with a flag; its help ends with its default and its variable."""
    defaults = defaults_of(settings_cls)
    for o in options:
        if o.flag is None:
            continue
        text = f"{o.help} (default: {describe_default(o, defaults)}; env {o.env})".replace("%", "%%")
        metavar = o.flag.removeprefix("--").upper().replace("-", "_")
        action = "append" if o.many else "store"
        parser.add_argument(o.flag, dest=o.field, action=action, default=None, metavar=metavar, help=text)


def variables_help(options: Iterable[Option], settings_cls: type) -> str:
    """A plain table of the variables and their defaults (for a process whose flags are not ours)."""
    defaults = defaults_of(settings_cls)
    return "\n".join(f"  {o.env:<44} {o.help} (default: {describe_default(o, defaults)})" for o in options)


def resolve(
    options: Iterable[Option], args: argparse.Namespace | None, env: Mapping[str, str]
) -> dict[str, Any]:
    """The values set by a flag (first) or a variable, parsed; raises :class:`SettingsError`."""
    values: dict[str, Any] = {}
    for o in options:
        raw, source = _raw(o, args, env)
        if raw is None:
            if o.required:
                raise SettingsError(f"{o.names} is required")
            continue
        try:
            values[o.field] = tuple(o.parse(item) for item in raw) if o.many else o.parse(raw[0])
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return values


def _raw(o: Option, args: argparse.Namespace | None, env: Mapping[str, str]) -> tuple[list[str] | None, str]:
    given = getattr(args, o.field, None) if args is not None and o.flag else None
    if given is not None:
        return (list(given) if o.many else [str(given)]), str(o.flag)
    value = env.get(o.env, "").strip()
    if value == "":
        return None, o.names
    if o.many:
        return [p for p in value.replace(",", " ").split() if p], o.env
    return [value], o.env


# -- parsers: each raises ValueError with a message that shows the value


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"not an integer: {raw!r}") from None


def number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def positive(raw: str) -> float:
    value = number(raw)
    if value <= 0:
        raise ValueError(f"must be a positive number: {raw!r}")
    return value


def at_least(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = integer(raw)
        if value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value

    return parse


def port(low: int = 0) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = integer(raw)
        if not low <= value <= 65535:
            raise ValueError(f"must be a port number {low}..65535, got {value}")
        return value

    return parse


def choice(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return raw

    return parse
