"""``bench report``: the figures of every leaderboard section, then the leaderboard linking them."""

from __future__ import annotations

from pathlib import Path

from harness.leaderboard import check_results_dir, default_board, section_keys, write_leaderboard
from harness.report.figures import figure_lines, section_figures, section_slug
from harness.report.frame import section_names
from harness.result_filter import ResultFilter
from harness.store import load_results


def write_report(
    results_dir: Path, output: Path | None = None, where: ResultFilter | None = None
) -> tuple[Path, list[Path]]:
    """``bench report``: the figures of every section into ``figures/<section>/`` beside the
    leaderboard, then the leaderboard (``<results_dir>/leaderboard.md`` or ``output``) with a
    link to each. Returns the leaderboard's path and the figures written. With a filter
    ``where``: of the results it selects, by default under ``<results_dir>/filtered/``."""
    where = where or ResultFilter()
    results_dir = check_results_dir(results_dir)
    board = Path(output) if output is not None else default_board(results_dir, where)
    results = where.select(load_results(results_dir), f"{results_dir}/")
    extras: dict[str, list[str]] = {}
    written: list[Path] = []
    sections = section_names(results)
    for key in section_keys(results):
        part = [r for r, name in zip(results, sections, strict=True) if name == key]
        folder = board.parent / "figures" / section_slug(key)
        figures, notes = section_figures(part, part[0]["dataset"], results_dir, folder)
        extras[key] = figure_lines(figures, notes, board.parent)
        written += [path for path, _ in figures]
    return write_leaderboard(results_dir, board, extras, where), written
