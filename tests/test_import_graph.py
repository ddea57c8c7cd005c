"""Arrows only point down: no import cycle among the project's own modules.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module (lazy imports inside functions included), relative imports resolved, and
an import of ``a.b.c`` also counted as one of the packages ``a.b`` above it, because Python
runs a package's ``__init__`` before its module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cycles, import_graph, imported_names, module_files

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "methods")


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
