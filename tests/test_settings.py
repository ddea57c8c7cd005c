"""Typed settings: read strictly from a config block, range-checked in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.settings import read_settings, setting


@dataclass(frozen=True)
class Launch:
    extra: Mapping[str, Any] = setting()
    lines: tuple[str, ...] = setting()
    host: str | None = setting()


@dataclass(frozen=True)
class Demo:
    momentum: float = setting(key="m", low=0.0, high=1.0, high_open=True)
    steps: int | None = setting(low=1)
    on: bool = setting()
    kind: str = setting(choices=("a", "b"))


GOOD = {"name": "demo", "m": 0.5, "steps": None, "on": True, "kind": "a"}


def read(**changes: object) -> Demo:
    return read_settings(Demo, {**GOOD, **changes}, "method", ignore=("name",))


def test_a_complete_block_is_read_with_its_types_and_key_names() -> None:
    assert read() == Demo(momentum=0.5, steps=None, on=True, kind="a")
    got = read(m=0, steps=3)
    assert got.momentum == 0.0 and isinstance(got.momentum, float) and got.steps == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"m": 1.0}, r"method\.m must be in \[0, 1\), got 1\.0"),
        ({"m": -0.1}, r"method\.m must be in \[0, 1\)"),
        ({"steps": 0}, r"method\.steps must be >= 1, got 0"),
        ({"steps": 2.5}, r"method\.steps must be an integer or null, got 2\.5"),
        ({"on": "yes"}, r"method\.on must be true or false"),
        ({"kind": "c"}, r"method\.kind must be one of a, b; got 'c'"),
        ({"m": None}, r"method\.m must be set"),
        ({"mm": 0.1}, r"method: unknown setting mm; known: m, steps, on, kind"),
    ],
)
def test_a_bad_value_or_key_is_one_clear_error(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read(**changes)


def test_a_missing_key_is_an_error_not_a_default() -> None:
    block = {k: v for k, v in GOOD.items() if k != "m"}
    with pytest.raises(ConfigError, match=r"method\.m is missing: set it"):
        read_settings(Demo, block, "method", missing_hint=": set it", ignore=("name",))


def test_mappings_lists_of_text_and_non_blank_text() -> None:
    got = read_settings(Launch, {"extra": {"a": 1}, "lines": ["x", "y"], "host": "n1"}, "l")
    assert got == Launch(extra={"a": 1}, lines=("x", "y"), host="n1")
    for block, message in [
        ({"extra": ["a"]}, r"l\.extra must be a mapping, got \['a'\]"),
        ({"lines": "x"}, r"l\.lines must be a list of strings, got 'x'"),
        ({"lines": ["x", 1]}, r"l\.lines must be a list of strings"),
        ({"host": " "}, r"l\.host must be a non-blank string or null, got ' '"),
    ]:
        with pytest.raises(ConfigError, match=message):
            read_settings(Launch, {"extra": {}, "lines": [], "host": None, **block}, "l")
