"""The wheel, installed as on a cluster: built from the sources, installed (not editable) into a
fresh virtual environment that reuses this interpreter's installed dependencies, and run as
``bench`` from a folder outside the checkout, with no ``PYTHONPATH``. Every command must import
the installed copy, whose configs come from the package itself."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import install_wheel, run_ok

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "harness", "methods", "configs", "references")

pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH or an activated venv: only the installed copy."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "COLUMNS": "200", **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the fer-bench wheel installed; its ``bin`` folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    return install_wheel(src, base, "fer_bench-*.whl", _clean_env())


def test_the_installed_bench_runs_from_any_folder(
    installed: Path, tiny: list[str], tmp_path: Path
) -> None:
    work = tmp_path / "project"  # outside the checkout
    work.mkdir()
    env = _clean_env(FER_BENCH_CACHE=str(tmp_path / "cache"))
    where = run_ok(
        installed / "python", "-c",
        "import harness, harness.config as c; print(harness.__file__); print(c.config_dir())",
        cwd=work, env=env,
    ).stdout.split()  # fmt: skip
    env_dir = installed.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(env_dir) for p in where), where
    assert where[1].endswith("harness/configs")

    methods = run_ok(installed / "bench", "methods", cwd=work, env=env).stdout
    assert "fixmatch" in methods and "dta_snl" in methods

    grid = ["--methods", "supervised", "--labels", "25%", "--seeds", "0", *tiny, "train.steps=6"]
    dry = run_ok(installed / "bench", "run", *grid, "--dry-run", cwd=work, env=env).stdout
    assert "1 run, 1 to run" in dry and not (work / "results").exists()

    run_ok(installed / "bench", "run", *grid, "--no-progress", cwd=work, env=env)
    (path,) = (work / "results" / "synthfer").glob("supervised__25pct__seed0__*.json")
    result = json.loads(path.read_text())
    assert result["timing"]["steps"] == 6 and 0 <= result["metrics"]["top1"] <= 100
    (version,) = re.findall(r'(?m)^version = "(.+)"$', (ROOT / "pyproject.toml").read_text())
    assert result["provenance"]["packages"]["fer-bench"] == version  # no git here: the version
    status = run_ok(installed / "bench", "status", "--all", cwd=work, env=env).stdout
    assert path.stem in status and "done" in status
