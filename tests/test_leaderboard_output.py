"""``bench leaderboard`` and ``bench report`` write the same file (the figure links survive a
``bench leaderboard``); ``bench leaderboard`` prints a short summary, ``bench report`` its
progress (issue 23 items 5 and 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DEBUG, GRID, protocol_result

from harness.cli import main
from harness.report.figure_index import STALE_NOTE
from harness.store import write_result


def _store(results_dir: Path, results: list[dict]) -> None:
    for result in results:
        write_result(results_dir / "synthfer" / f"{result['run_id']}.json", result)


def test_leaderboard_and_report_write_the_same_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    _store(results, GRID + DEBUG)
    assert main(["report", "--results-dir", str(results)]) == 0
    err = capsys.readouterr().err
    assert "drawing the figures of 10 runs: 0/2 sections" in err and "2/2 sections, done" in err
    board = results / "leaderboard.md"
    reported = board.read_text()
    assert "figures/synthfer_train.steps=60/accuracy_vs_labels.png" in reported

    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    assert board.read_text() == reported, "bench leaderboard kept the figure links"
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "synthfer · train.steps=1200 — top-1 accuracy (%), 8 runs"
    assert "synthfer · train.steps=60 — top-1 accuracy (%), 2 runs" in lines
    assert any(line.startswith("| fixmatch ") for line in lines)
    assert "### " not in out and "paired" not in out.split("written to")[0]  # the file has them
    assert lines[-1].startswith(f"written to {board} (") and "bench report" not in lines[-1]
    assert len(lines) < len(reported.splitlines()) / 3

    # A new run: the section's figures are older than its runs, and the file says so.
    _store(results, [protocol_result("fixmatch", "10%", 1, 21.0, train__steps=60)])
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    updated = board.read_text()
    assert "figures/synthfer_train.steps=60/accuracy_vs_labels.png" in updated
    assert updated.count(STALE_NOTE) == 1  # the 1,200-step section's figures are current


def test_without_a_report_the_leaderboard_says_how_to_draw_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    _store(results, GRID)
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "synthfer — top-1 accuracy (%), 8 runs"
    assert "`bench report` draws the figures" in out
    assert "### Figures" not in (results / "leaderboard.md").read_text()


@pytest.mark.slow
def test_the_committed_board_is_what_bench_leaderboard_writes(tmp_path: Path) -> None:
    """The committed leaderboard was written by ``bench report``; ``bench leaderboard`` writes
    it again byte for byte, figure links included (from the committed figure index)."""
    import shutil

    from harness.leaderboard import write_leaderboard

    committed = Path(__file__).resolve().parents[1] / "results"
    (tmp_path / "figures").mkdir()
    shutil.copy(committed / "figures" / ".index.json", tmp_path / "figures" / ".index.json")
    board = write_leaderboard(committed, tmp_path / "leaderboard.md")
    assert board.read_text() == (committed / "leaderboard.md").read_text()


def test_one_run_is_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    _store(results, [protocol_result("fixmatch", "10%", 1, 21.0)])
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "synthfer — top-1 accuracy (%), 1 run"
    args = ["--methods", "supervised", "--results-dir", str(results)]
    assert main(["run", *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 run, 1 to run" in out and "local: 1 run on this machine" in out
