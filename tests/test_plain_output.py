"""``bench`` writing into a pipe or a log (a SLURM ``.out``, ``| tee``, ``> log``): plan and
status tables print run ids whole, one run a line, and batch scripts are never folded. A
subprocess's captured stdout is not a terminal, as a pipe is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRID = ("--methods", "fixmatch,dta_snl[snl=false]", "--labels", "10%,40", "--seeds", "0-1")


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real ``bench``, its stdout a pipe, at rich's default width for a pipe (80)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )


def _run_rows(stdout: str, marker: str) -> dict[str, list[str]]:
    """Each line that starts with a run id (``marker`` is in every id): its cells."""
    return {line.split()[0]: line.split() for line in stdout.splitlines() if marker in line}


def test_a_piped_plan_prints_every_run_id_whole_on_its_line(tmp_path: Path) -> None:
    out = bench("run", "--dry-run", *GRID, "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = _run_rows(out.stdout, "__seed")
    assert len(rows) == 8, out.stdout
    for run_id, cells in rows.items():
        assert cells[1] in ("fixmatch", "dta_snl[snl=false]")  # the method, on the id's line
        assert run_id.split("__")[2] == f"seed{cells[-3]}"  # and the seed column
    assert any(line.endswith("to run") for line in out.stdout.splitlines())
    assert "│" not in out.stdout and "┃" not in out.stdout
    assert "40 labelled images in total" in out.stdout  # a cell with spaces stays one cell


def test_piped_status_prints_run_ids_whole(tmp_path: Path) -> None:
    out = bench("status", *GRID, "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = _run_rows(out.stdout, "__seed")
    assert len(rows) == 8 and all(cells[-1] == "missing" for cells in rows.values()), out.stdout


@pytest.mark.parametrize("depth", [1, 6])
def test_a_piped_slurm_dry_run_prints_the_batch_script_unfolded(tmp_path: Path, depth: int) -> None:
    results = tmp_path.joinpath(*(["a-rather-long-folder-name"] * depth), "results")
    out = bench(
        "run", "--dry-run", "--launcher", "slurm", *GRID, "--results-dir", str(results),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    (command,) = [line for line in lines if line.startswith("exec ")]
    assert command.split()[-2:] == ["submitit.core._submit", str(results / "runs" / "slurm")]
    (log,) = [line for line in lines if line.startswith("#SBATCH --output=")]
    assert log.startswith(f"#SBATCH --output={results / 'runs' / 'slurm'}/")
    assert len(_run_rows(out.stdout, "__seed")) == 8
