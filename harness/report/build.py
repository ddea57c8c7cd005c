"""``bench report``: the figures of every leaderboard section, then the leaderboard linking them."""

from __future__ import annotations

from pathlib import Path

from harness.leaderboard import check_results_dir, default_board, sections_of, write_leaderboard
from harness.progress import counted
from harness.report.figure_index import write_figure_index
from harness.report.figures import figure_lines, section_figures, section_slug
from harness.result_filter import ResultFilter
from harness.store import load_results
from harness.tables import how_many


def write_report(
    results_dir: Path,
    output: Path | None = None,
    where: ResultFilter | None = None,
    show_progress: bool = True,
) -> tuple[Path, list[Path]]:
    """``bench report``: the figures of every section into ``figures/<section>/`` beside the
    leaderboard, recorded in ``figures/.index.json`` (so ``bench leaderboard`` keeps the
    links), then the leaderboard (``<results_dir>/leaderboard.md`` or ``output``) with a link
    to each. Returns the leaderboard's path and the figures written. With a filter ``where``:
    of the results it selects, by default under ``<results_dir>/filtered/``. Progress (a
    minute on a few hundred runs) goes to stderr, section by section."""
    where = where or ResultFilter()
    results_dir = check_results_dir(results_dir)
    board = Path(output) if output is not None else default_board(results_dir, where)
    results = where.select(load_results(results_dir), f"{results_dir}/")
    extras: dict[str, list[str]] = {}
    written: list[Path] = []
    sections = sections_of(results)
    what = f"drawing the figures of {how_many(len(results), 'run')}"
    with counted(what, len(sections), unit="sections", enabled=show_progress) as advance:
        for key, part in sections.items():
            folder = board.parent / "figures" / section_slug(key)
            figures, notes = section_figures(part, part[0]["dataset"], results_dir, folder)
            extras[key] = figure_lines(figures, notes, board.parent)
            written += [path for path, _ in figures]
            advance(1)
    write_figure_index(board.parent, extras, sections)
    return write_leaderboard(results_dir, board, extras, where), written
