"""A method from another installed package: found through the ``bench.methods`` entry-point
group, listed by ``bench methods`` and run end to end by ``bench run`` with no file in
``methods/`` or ``configs/method/`` and no change to the engine.

The package is a real distribution on disk (a module plus its ``.dist-info`` with
``entry_points.txt``, what ``pip install`` leaves behind; tests/plugin_package.py, through the
``plugin_site`` fixture) on the subprocess's ``PYTHONPATH``, so importlib.metadata discovers it
exactly as it would an installed one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import bench


def _bench(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return bench(*args, cwd=cwd, columns=200, path=[site])


@pytest.mark.slow
def test_an_installed_package_adds_a_method_that_runs_end_to_end(
    plugin_site: Path, tiny: list[str], tmp_path: Path
) -> None:
    site = plugin_site
    results = tmp_path / "results"

    listed = _bench(site, "methods", cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "entmin" in listed.stdout and "Entropy minimisation" in listed.stdout
    assert "dta_snl" in listed.stdout, "the built-in methods are still there"

    # Its settings are checked like a built-in method's: a misspelt ablation is refused.
    typo = _bench(site, "run", "--methods", "entmin[lamda_u=0]", "--results-dir", str(results),
                  cwd=tmp_path)  # fmt: skip
    assert typo.returncode == 2
    assert "entmin has no setting 'lamda_u'; its settings: lambda_u" in " ".join(
        typo.stdout.split()
    )

    grid = ["--methods", "entmin,entmin[lambda_u=0]", "--labels", "25%", "--seeds", "0"]
    run = _bench(site, "run", *grid, "--results-dir", str(results), "--no-progress", *tiny,
                 cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    by_label = {
        r["method_label"]: r
        for r in (json.loads(p.read_text()) for p in (results / "synthfer").glob("*.json"))
    }
    assert set(by_label) == {"entmin", "entmin[lambda_u=0]"}
    full, ablated = by_label["entmin"], by_label["entmin[lambda_u=0]"]
    assert full["config"]["method"] == {"name": "entmin", "lambda_u": 0.3}  # its default_config
    assert ablated["config"]["method"]["lambda_u"] == 0
    assert full["method_summary"] == {"steps_seen": 40}  # every step of the schedule
    assert full["diagnostics"]["entropy"] > 0  # the engine logged what the plugin reported
    assert full["metrics"] != ablated["metrics"], "the plugin's loss changed the training"

    board = _bench(site, "leaderboard", "--results-dir", str(results), cwd=tmp_path)
    assert board.returncode == 0, board.stdout + board.stderr
    rows = {
        line.split("|")[1].strip()
        for line in (results / "leaderboard.md").read_text().splitlines()
        if line.startswith("| ")
    }
    assert {"entmin", "entmin[lambda_u=0]"} <= rows


def test_without_the_package_the_method_is_unknown(tmp_path: Path) -> None:
    proc = _bench(tmp_path / "empty", "run", "--methods", "entmin", "--results-dir",
                  str(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "unknown method 'entmin'; available methods: adacm, dta_snl" in " ".join(
        proc.stdout.split()
    )


def test_a_plugins_code_enters_its_run_ids_and_its_package_its_provenance() -> None:
    from plugin_package import PLUGIN_MODULE, register_plugin_in_this_process

    from harness.plan import build_plan
    from harness.registry import _source_digest, plugin_provenance

    site = register_plugin_in_this_process()
    (spec,) = build_plan("entmin", "10%", "0", "synthfer", [])
    assert spec.config["plugin"] == {
        "module": PLUGIN_MODULE,
        "source_sha256": _source_digest(PLUGIN_MODULE),
    }
    assert plugin_provenance("entmin") == {
        "package": "fer-bench-entmin", "version": "0.1", **spec.config["plugin"],
    }  # fmt: skip
    (builtin,) = build_plan("fixmatch", "10%", "0", "synthfer", [])
    assert "plugin" not in builtin.config and plugin_provenance("fixmatch") is None
    # Any change to the package's files is another digest (so another run id).
    init = site / PLUGIN_MODULE / "__init__.py"
    before = _source_digest(PLUGIN_MODULE)
    text = init.read_text()
    try:
        init.write_text(text + "\n# edited\n")
        assert _source_digest(PLUGIN_MODULE) != before
    finally:
        init.write_text(text)
    assert _source_digest(PLUGIN_MODULE) == before
