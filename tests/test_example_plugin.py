"""The example plugin package (examples/pseudo_label/) as a stranger uses it: its wheel built
from the folder, installed (not editable) into a fresh virtual environment that reuses this
interpreter's dependencies (no network), then ``bench methods`` lists it, ``bench run`` trains
it, its result names the package and version, and editing its code gives its runs new ids
(while the built-in methods' ids stay what they are)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import install_wheel, run_ok

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pseudo_label"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the example's wheel installed; its interpreter."""
    base = tmp_path_factory.mktemp("example-plugin")
    src = base / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return install_wheel(src, base, "fer_bench_pseudo_label-*.whl", env) / "python"


def _bench(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``bench`` of this checkout under the venv's interpreter (the plugin is found through
    its installed entry point)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return run_ok(python, "-m", "harness.cli", *args, cwd=cwd, env=env)


@pytest.mark.slow
def test_the_example_plugin_installs_trains_and_names_itself(
    python: Path, tiny: list[str], tmp_path: Path
) -> None:
    listed = _bench(python, "methods", cwd=tmp_path).stdout
    assert "pseudo_label" in listed and "fixmatch" in listed

    results = tmp_path / "results"
    grid = ["--methods", "pseudo_label,supervised", "--labels", "25%", "--seeds", "0",
            "--results-dir", str(results), *tiny, "train.steps=8"]  # fmt: skip
    _bench(python, "run", *grid, "--no-progress", cwd=tmp_path)
    (path,) = (results / "synthfer").glob("pseudo_label__25pct__seed0__*.json")
    result = json.loads(path.read_text())
    plugin = result["provenance"]["plugin"]
    assert (plugin["package"], plugin["version"]) == ("fer-bench-pseudo-label", "0.1.0")
    assert plugin["module"] == "fer_bench_pseudo_label.pseudo_label"
    assert result["config"]["plugin"]["source_sha256"] == plugin["source_sha256"]
    assert result["config"]["method"] == {
        "name": "pseudo_label", "p_cutoff": 0.95, "lambda_u": 1.0, "unsup_warmup": 0.4,
    }  # fmt: skip  # its package's YAML
    assert result["timing"]["steps"] == 8 and "unsup_weight" in result["diagnostics"]
    (builtin,) = (results / "synthfer").glob("supervised__25pct__seed0__*.json")
    assert "plugin" not in json.loads(builtin.read_text())["provenance"]

    again = _bench(python, "run", *grid, "--dry-run", cwd=tmp_path).stdout
    assert "2 runs, 0 to run" in again, again

    # Edit the installed plugin: its runs are new runs, the built-in's are still done.
    module = Path(
        run_ok(python, "-c", "import fer_bench_pseudo_label.pseudo_label as m; print(m.__file__)",
             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    )  # fmt: skip
    code = module.read_text()
    edit = code.replace("weight = self.settings.lambda_u", "weight = 2 * self.settings.lambda_u")
    assert edit != code
    module.write_text(edit)
    edited = _bench(python, "run", *grid, "--dry-run", cwd=tmp_path).stdout
    assert "2 runs, 1 to run" in edited, edited
    (line,) = [row for row in edited.splitlines() if row.startswith("pseudo_label__")]
    assert path.stem not in line and line.endswith("to run")
