"""The method registry: built-in plugins from ``methods/``, others through the
``bench.methods`` entry-point group, all under one decorator.

A plugin module registers itself on import::

    @register_method("fixmatch", "FixMatch: confident weak-view pseudo-labels on strong views")
    class FixMatch(Method): ...

An installed package adds methods by declaring, in its ``pyproject.toml``::

    [project.entry-points."bench.methods"]
    mymethod = "mypackage.mymethod"      # a module that calls register_method on import
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points

from harness.errors import BenchError
from harness.method import Method

ENTRY_POINT_GROUP = "bench.methods"


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name, one-line description and class."""

    name: str
    description: str
    cls: type[Method]


_REGISTRY: dict[str, MethodInfo] = {}
_discovered = False


class UnknownMethodError(BenchError, KeyError):
    """Raised for a method name nobody registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_method(name: str, description: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) expects a Method subclass, got {cls!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} is registered twice: {existing.cls} and {cls}")
        _REGISTRY[name] = MethodInfo(name, description, cls)
        return cls

    return decorate


def discover(refresh: bool = False) -> None:
    """Import every built-in method module and every ``bench.methods`` entry point (once;
    ``refresh`` looks again, e.g. after a package was installed into a running process)."""
    global _discovered
    if _discovered and not refresh:
        return
    importlib.invalidate_caches()
    import methods

    for module in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{module.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        # An entry point may name a module (registers on import) or a Method class.
        if isinstance(loaded, type) and issubclass(loaded, Method) and entry.name not in _REGISTRY:
            register_method(entry.name, (loaded.__doc__ or entry.name).strip().splitlines()[0])(
                loaded
            )
    _discovered = True


def available_methods() -> dict[str, MethodInfo]:
    """All registered methods, sorted by name."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> MethodInfo:
    """Look a method up by name; an unknown name raises with the list of known ones."""
    known = available_methods()
    if name not in known:
        listing = ", ".join(known) or "(none)"
        raise UnknownMethodError(f"unknown method {name!r}; available methods: {listing}")
    return known[name]
