"""Typed settings read strictly from one config block, range-checked in one place.

A settings class is a frozen dataclass whose fields are the block's keys (a field may name its
key apart with ``setting(key=...)``); :func:`read_settings` builds one from the block: every key
must be there (a missing key is an error, never a silent default: defaults live in the YAML),
no other key may be (a misspelt one is refused, not ignored), each value must have the field's
type (an ``int`` is accepted for a ``float``; a ``str`` must not be blank; ``Mapping[str, Any]``
takes a mapping, ``tuple[str, ...]`` a list of strings) and lie in the field's range or
choices. A check across fields goes in the class's ``__post_init__``, raising
:class:`ConfigError`.

    @dataclass(frozen=True)
    class FixMatchSettings:
        p_cutoff: float = setting(low=0.0, high=1.0)
        lambda_u: float = setting()
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """An interval a number must lie in; an open end excludes its bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return (
                f"in {'(' if self.low_open else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return f"{'<' if self.high_open else '<='} {_num(self.high)}"


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting(
    *,
    key: str | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Collection[str] | None = None,
) -> Any:
    """A settings field: its config ``key`` (default: the field's name), the interval a number
    must lie in (``low``/``high``, closed unless ``*_open``) or the ``choices`` of a string."""
    bounds = Bounds(low, high, low_open, high_open) if (low, high) != (None, None) else None
    return dataclasses.field(metadata={"key": key, "bounds": bounds, "choices": choices})


def config_key(field: dataclasses.Field) -> str:
    """The config key of a settings field."""
    return field.metadata.get("key") or field.name


def setting_keys(cls: type) -> list[str]:
    """The config keys a settings class reads, in declaration order."""
    return [config_key(f) for f in fields(cls)]


def read_settings(
    cls: type[T],
    block: Mapping[str, Any],
    where: str,
    *,
    missing_hint: str = "",
    unknown_hint: str = "",
    ignore: Collection[str] = (),
) -> T:
    """``cls`` built from ``block`` (the config at ``where``, e.g. ``method``), strictly: see
    the module docstring. ``ignore``: keys of the block that are not settings (``name``);
    ``missing_hint`` ends the message of a missing key (where to set it), ``unknown_hint``
    that of an unknown one."""
    known = setting_keys(cls)
    unknown = sorted(set(block) - set(known) - set(ignore))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known: {', '.join(known) or '(none)'}{unknown_hint}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for field in fields(cls):
        key = config_key(field)
        if key not in block:
            raise ConfigError(f"{where}.{key} is missing{missing_hint}")
        values[field.name] = _checked(f"{where}.{key}", block[key], hints[field.name], field)
    return cls(**values)


def _checked(name: str, value: Any, kind: Any, field: dataclasses.Field) -> Any:
    """``value`` as the field's type, in its range and choices; a ConfigError otherwise."""
    allowed = _types(kind)
    if value is None:
        if type(None) not in allowed:
            raise ConfigError(f"{name} must be set (null is not allowed)")
        return None
    cast = _cast(name, value, allowed)
    bounds, choices = field.metadata.get("bounds"), field.metadata.get("choices")
    if bounds is not None and not bounds.holds(cast):
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    if choices is not None and cast not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {cast!r}")
    return cast


def _types(kind: Any) -> tuple[Any, ...]:
    """The types a field's annotation admits (``int | None`` → ``(int, NoneType)``)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _cast(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """``value`` as the first admitted type it fits: bool only from a bool (or 0/1), int only
    from an integer, float from any number, str from a non-blank string, ``Mapping[str, Any]``
    from a mapping, ``tuple[str, ...]`` from a list of strings."""
    for kind in allowed:
        origin = typing.get_origin(kind)
        if origin in (dict, Mapping) and isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        if (
            origin is tuple
            and isinstance(value, Sequence)
            and not isinstance(value, str)
            and all(isinstance(item, str) for item in value)
        ):
            return tuple(value)
        if origin is not None:
            continue
        if kind is bool and (isinstance(value, bool) or value in (0, 1)):
            return bool(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str) and value.strip():
            return str(value)
        if kind not in (bool, int, float, str, type(None)) and isinstance(value, kind):
            return value
    names = " or ".join(_kind_name(k) for k in allowed)
    raise ConfigError(f"{name} must be {names}, got {value!r}")


_KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a non-blank string",
    type(None): "null",
    dict: "a mapping",
    Mapping: "a mapping",
    tuple: "a list of strings",
}


def _kind_name(kind: Any) -> str:
    """How an error message names a type (``Mapping[str, Any]`` → ``a mapping``)."""
    kind = typing.get_origin(kind) or kind
    return _KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
