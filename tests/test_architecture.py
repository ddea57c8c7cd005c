"""docs/architecture.md's layers hold: no module imports a module of a layer above its own.

The layers are read from the document itself (its ``### N.`` headings and the modules named in
the first column of each table), the imports as tests/test_import_graph.py reads them (the
graph code is in tests/helpers.py). A module the document does not name yet is not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

from helpers import import_graph, module_files

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def document_layers(text: str) -> dict[str, int]:
    """Module name → its layer (1 at the top) for every module the document's tables name:
    ``report/frame.py`` is ``harness.report.frame``; under the data layer's heading,
    ``cache.py`` is ``harness.data.cache``; ``methods/*.py`` is every method."""
    layers: dict[str, int] = {"harness.cli": 1}
    layer, package = 0, "harness"
    for line in text.splitlines():
        heading = re.match(r"### (\d+)\. (.*)", line)
        if heading:
            layer = int(heading.group(1))
            package = "harness.data" if "harness/data/" in heading.group(2) else "harness"
            continue
        if line.startswith("## "):
            layer = 0
        if not layer or not line.startswith("| ") or line.startswith("| room"):
            continue
        for name in re.findall(r"`([\w/*]+)(?:\.py|/)`", line.split("|")[1]):
            module = name.replace("/", ".")
            if module == "methods.*":
                layers["methods.*"] = layer
            else:
                layers[f"{package}.{module}"] = layer
    return layers


def _layer(module: str, layers: dict[str, int]) -> int | None:
    if module.startswith("methods."):
        return layers.get("methods.*")
    while module and module not in layers:
        module = module.rpartition(".")[0]  # harness.launchers.local: the launchers/ row
    return layers.get(module)


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """``a (layer) -> b (layer)`` for every import of a module from a layer above."""
    found = []
    for module, targets in sorted(graph.items()):
        mine = _layer(module, layers)
        for target in sorted(targets):
            theirs = _layer(target, layers)
            if mine is not None and theirs is not None and theirs < mine:
                found.append(f"{module} ({mine}) -> {target} ({theirs})")
    return found


def test_every_import_points_down_the_documented_layers() -> None:
    layers = document_layers(DOC.read_text())
    assert layers["harness.engine"] > layers["harness.worker"] > layers["harness.plan"]
    assert layers["harness.data.cache"] > layers["harness.engine"]
    graph = import_graph(module_files(ROOT, ("harness", "methods")))
    assert upward_imports(graph, layers) == []


def test_an_upward_import_is_found() -> None:
    layers = document_layers(
        "### 1. Top\n\n| room | holds |\n|---|---|\n| `top.py` | x |\n\n"
        "### 2. Data: `harness/data/`\n\n| room | holds |\n|---|---|\n| `low.py` | y |\n"
    )
    assert layers["harness.top"] == 1 and layers["harness.data.low"] == 2
    graph = {"harness.top": {"harness.data.low"}, "harness.data.low": {"harness.top"}}
    assert upward_imports(graph, layers) == ["harness.data.low (2) -> harness.top (1)"]
