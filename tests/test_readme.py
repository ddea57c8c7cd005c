"""The README's quick start and CI run the same test command (.ci/run says so)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    """The lines of the code blocks before the user guide."""
    quick_start = (ROOT / "README.md").read_text().split("## User guide")[0]
    lines, inside = [], False
    for line in quick_start.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def test_ci_runs_the_readme_test_command() -> None:
    (test_command,) = [line for line in _quick_start_commands() if "pytest" in line]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_quick_start_runs_bench_on_the_built_in_dataset() -> None:
    (main_job,) = [line for line in _quick_start_commands() if "bench run" in line]
    assert "pip install" in main_job and "--dataset" not in main_job  # synthfer by default
