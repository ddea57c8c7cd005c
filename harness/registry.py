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

import ast
import functools
import hashlib
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.method import Method

ENTRY_POINT_GROUP = "bench.methods"
BUILTIN_PACKAGE = "methods"


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name, one-line description and the module that registers it.

    Listing methods reads names and descriptions from the modules' source (:func:`discover`),
    so ``bench methods`` and ``bench run --dry-run`` never import torch; ``cls`` imports the
    module on first use.
    """

    name: str
    description: str
    module: str

    @property
    def cls(self) -> type[Method]:
        """The method's class (importing its module, and torch, the first time)."""
        if self.name not in _CLASSES:
            importlib.import_module(self.module)
        if self.name not in _CLASSES:
            raise BenchError(
                f"method {self.name!r}: module {self.module} does not register it "
                f"(@register_method({self.name!r}, ...))"
            )
        return _CLASSES[self.name]


_REGISTRY: dict[str, MethodInfo] = {}
_CLASSES: dict[str, type[Method]] = {}
# The installed distribution (name, version) behind each entry point, by top-level package.
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}
_discovered = False


class UnknownMethodError(BenchError, KeyError):
    """Raised for a method name nobody registered; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_method(name: str, description: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        from harness.method import Method

        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) expects a Method subclass, got {cls!r}")
        existing = _CLASSES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"method {name!r} is registered twice: {existing} and {cls}")
        _CLASSES[name] = cls
        _REGISTRY[name] = MethodInfo(name, description, cls.__module__)
        return cls

    return decorate


def declared_methods(source: str) -> list[tuple[str, str]]:
    """``(name, description)`` of every ``@register_method("name", "description")`` in a
    module's source whose two arguments are literal strings (read, not run)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "register_method"
                and len(deco.args) == 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in deco.args)
            ):
                found.append((deco.args[0].value, deco.args[1].value))
    return found


_UNKNOWN = object()


def _registers(node: ast.ClassDef, name: str) -> bool:
    """Whether ``node`` is decorated ``@register_method(name, ...)``."""
    return any(
        isinstance(deco, ast.Call)
        and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "register_method"
        and deco.args
        and isinstance(deco.args[0], ast.Constant)
        and deco.args[0].value == name
        for deco in node.decorator_list
    )


def declared_attribute(source: str, name: str, attribute: str, default: object) -> object:
    """The literal value the class registered as ``name`` in ``source`` gives ``attribute``
    (read, not run): from its body; ``default`` (the :class:`Method` default) when its only base
    is ``Method`` and its body does not set it; :data:`_UNKNOWN` when it cannot be told without
    importing (another base, a computed value)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or not _registers(node, name):
            continue
        for statement in node.body:
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets, value = [statement.target], statement.value
            else:
                continue
            if any(getattr(target, "id", None) == attribute for target in targets):
                return value.value if isinstance(value, ast.Constant) else _UNKNOWN
        bases = [getattr(b, "id", getattr(b, "attr", None)) for b in node.bases]
        return default if bases == ["Method"] else _UNKNOWN
    return _UNKNOWN


@functools.cache
def method_attribute(name: str, attribute: str, default: object) -> object:
    """A class attribute of the registered method ``name`` (``default``: the :class:`Method`
    default), read from its module's source where it can be, without importing torch
    (``bench status`` and the leaderboard ask it of every result); else from the class."""
    info = get_method(name)
    spec = importlib.util.find_spec(info.module)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        try:
            with open(spec.origin, encoding="utf-8") as handle:
                value = declared_attribute(handle.read(), name, attribute, default)
        except (OSError, SyntaxError, UnicodeDecodeError):
            value = _UNKNOWN
        if value is not _UNKNOWN:
            return value
    return getattr(info.cls, attribute)


def _declare_module(module: str) -> bool:
    """Record the methods ``module`` declares, without importing it; False when its source
    cannot be read or declares none literally (the caller imports it instead)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            declared = declared_methods(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    for name, description in declared:
        _REGISTRY.setdefault(name, MethodInfo(name, description, module))
    return bool(declared)


def _load_entry_point(entry: EntryPoint) -> None:
    """An entry point naming a module is read like a built-in; one naming a class (or a module
    whose registration is not literal) is imported, and a class registered under its name."""
    if entry.dist is not None:
        _DISTRIBUTIONS[entry.module.split(".")[0]] = (entry.dist.name, entry.dist.version)
    if entry.attr is None and _declare_module(entry.module):
        return
    from harness.method import Method

    loaded = entry.load()
    if isinstance(loaded, type) and issubclass(loaded, Method) and entry.name not in _REGISTRY:
        register_method(entry.name, (loaded.__doc__ or entry.name).strip().splitlines()[0])(loaded)


def discover(refresh: bool = False) -> None:
    """Find every built-in method module and every ``bench.methods`` entry point (once;
    ``refresh`` looks again, e.g. after a package was installed into a running process)."""
    global _discovered
    if _discovered and not refresh:
        return
    importlib.invalidate_caches()
    builtin = importlib.import_module(BUILTIN_PACKAGE)
    for module in pkgutil.iter_modules(builtin.__path__):
        name = f"{BUILTIN_PACKAGE}.{module.name}"
        if not _declare_module(name):
            importlib.import_module(name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _load_entry_point(entry)
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


def method_settings(name: str) -> dict:
    """A method's default ``method:`` block: its config file, else its class's defaults."""
    # Composing a config loads Hydra; `bench methods` lists methods without it.
    from harness.config import compose_config, group_options

    if name in group_options("method"):
        return compose_config([f"method={name}"])["method"]
    return {"name": name, **get_method(name).cls.default_config}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of this repository's methods (``methods/``)."""
    return get_method(name).module.startswith(f"{BUILTIN_PACKAGE}.")


def plugin_identity(name: str) -> dict[str, str] | None:
    """What makes a run of a method from outside ``methods/`` the run it is, beyond its
    settings: its module and a SHA-256 of its code (every file of the module's top-level
    package), so that editing a plugin and rerunning trains again instead of skipping the run
    as done. None for a built-in method: their code is the repository's commit, and their
    committed run ids must not change."""
    if is_builtin(name):
        return None
    module = get_method(name).module
    return {"module": module, "source_sha256": _source_digest(module.split(".")[0])}


def plugin_provenance(name: str) -> dict[str, str | None] | None:
    """A plugin's identity with the distribution that installed it (package name and
    version, None when it came from no installed entry point); None for a built-in method."""
    identity = plugin_identity(name)
    if identity is None:
        return None
    package, version = _DISTRIBUTIONS.get(identity["module"].split(".")[0], (None, None))
    return {"package": package, "version": version, **identity}


def _source_digest(top_level: str) -> str:
    """SHA-256 over the files of a top-level package (relative path and bytes, in path order;
    compiled caches left out), or of a single-file module; ``unknown`` when not found."""
    try:
        spec = importlib.util.find_spec(top_level)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "unknown"
    if spec.submodule_search_locations:
        roots = [Path(location) for location in spec.submodule_search_locations]
        files = [
            (root, path)
            for root in roots
            for path in root.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
    elif spec.origin and Path(spec.origin).is_file():
        files = [(Path(spec.origin).parent, Path(spec.origin))]
    else:
        return "unknown"
    digest = hashlib.sha256()
    for root, path in sorted(files, key=lambda item: item[1].relative_to(item[0]).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
