"""Arrows only point down: no import cycle among the project's own modules.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module (lazy imports inside functions included), relative imports resolved, and
an import of ``a.b.c`` also counted as one of the packages ``a.b`` above it, because Python
runs a package's ``__init__`` before its module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "methods")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Module name → source file of every ``.py`` under ``packages`` (a package is its
    ``__init__``)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports, relative imports made absolute; for ``from x
    import y`` both ``x`` and ``x.y`` (``y`` may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules importing it runs: the deepest module each imported name
    names, and the packages above that (whose ``__init__`` runs first), except the packages
    above the importer itself (already running when it does)."""
    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        own = set(_ancestors(module))
        for name in imported_names(module, path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if not name:
                continue
            for target in [*_ancestors(name), name]:
                if target in files and target != module and target not in own:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root, ("pkg",))


def test_the_project_has_no_import_cycle() -> None:
    files = module_files(ROOT, PACKAGES)
    assert "harness.engine" in files and "harness.report.frame" in files
    assert cycles(import_graph(files)) == []


def test_a_lazy_two_module_cycle_is_found(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
        },
    )
    assert cycles(import_graph(files)) == [["pkg.a", "pkg.b"]]


def test_a_relative_import_cycle_is_found(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/a.py": "from .b import x\n",
            "pkg/sub/b.py": "from ..c import y\n",
            "pkg/c.py": "from .sub import a\n",
        },
    )
    assert cycles(import_graph(files)) == [["pkg.c", "pkg.sub.a", "pkg.sub.b"]]


def test_a_package_init_importing_its_importer_is_a_cycle(tmp_path: Path) -> None:
    # top imports pkg.report.frame, which runs pkg/report/__init__.py, which imports top.
    files = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/top.py": "from pkg.report.frame import rows\n",
            "pkg/report/__init__.py": "from pkg.top import board\n",
            "pkg/report/frame.py": "rows = 1\n",
        },
    )
    assert cycles(import_graph(files)) == [["pkg.report", "pkg.top"]]


@pytest.mark.parametrize(
    "source",
    ["import pkg.b\n", "from pkg import b\n", "from . import b\n", "from .b import *\n"],
)
def test_every_import_form_is_an_edge(tmp_path: Path, source: str) -> None:
    files = _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": source, "pkg/b.py": ""})
    assert import_graph(files)["pkg.a"] == {"pkg.b"}


def test_an_acyclic_chain_has_no_cycle(tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "import pkg.c\n",
            "pkg/c.py": "import os\n",
        },
    )
    assert cycles(import_graph(files)) == []


def test_test_files_share_code_through_helpers_not_each_other() -> None:
    """A test file imports what it shares from ``tests/helpers.py`` (or a fixture), never from
    another test file: running one file alone must not depend on another's contents."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for name in imported_names(path.stem, path):
            if name.split(".")[0].startswith("test_"):
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []
