"""Tables on the terminal: rich for a screenful, plain aligned text for long listings and for
anything that is not a terminal (a pipe, a file, a SLURM log); :func:`how_many` for the counts
in their titles and summaries."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Rich measures every cell of a table: 13 ms a row, 130 s for 10,000 runs (cProfile of
# `bench status --all`, 2 cores). Above this many rows, tabulate lays out the same columns.
RICH_ROWS = 500


def how_many(number: int, noun: str) -> str:
    """``1 run``, ``4 runs``: ``number`` and ``noun``, plural (with an s) unless one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def is_plain(console: Console, rows: int = 0) -> bool:
    """Whether a table of ``rows`` rows goes out as plain text: when ``console`` is not a
    terminal (rich would fold run ids and scripts at 80 columns, the ids ``--runs`` needs
    whole) or the table is longer than :data:`RICH_ROWS`."""
    return not console.is_terminal or rows > RICH_ROWS


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A rich table of plain-text cells (escaped: ``dta_snl[snl=false]`` is not markup)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def plain_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = ""
) -> str:
    """The table as plain aligned text (tabulate), every cell whole on one line."""
    from tabulate import tabulate

    text = tabulate(rows, headers=list(columns), tablefmt="simple", disable_numparse=True)
    return f"{title}\n{text}\n" + (f"{caption}\n" if caption else "")


def print_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str = "",
) -> None:
    """Print plain-text ``rows`` under ``columns``: a rich table on a terminal up to
    :data:`RICH_ROWS` rows, plain aligned text (tabulate) otherwise (:func:`is_plain`)."""
    if is_plain(console, len(rows)):
        console.file.write(plain_table(title, columns, rows, caption))
        return
    table = rich_table(title, columns, rows)
    table.caption = escape(caption) if caption else None
    console.print(table)
