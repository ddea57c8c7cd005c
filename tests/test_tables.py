"""Tables: rich on a terminal for a screenful; plain aligned text for long listings (rich
would take minutes on 10,000 rows) and off a terminal (ids and cells never folded)."""

from __future__ import annotations

import io

from rich.console import Console

from harness.tables import RICH_ROWS, print_table


def _printed(rows: list[list[str]], terminal: bool = True) -> str:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=terminal)
    print_table(console, "grid", ("run", "method"), rows, caption="note")
    return out.getvalue()


def test_a_screenful_is_a_rich_table_and_more_is_plain_text() -> None:
    few = _printed([["a__1", "dta_snl[snl=false]"]])
    assert "│ a__1 │ dta_snl[snl=false] │" in few and "note" in few  # escaped, not markup
    many = _printed([[f"r{i}", "fixmatch"] for i in range(RICH_ROWS + 1)])
    lines = many.splitlines()
    assert lines[0] == "grid" and lines[1].split() == ["run", "method"]
    assert lines[3].split() == ["r0", "fixmatch"] and lines[-1] == "note"
    assert len(lines) == RICH_ROWS + 1 + 4 and "│" not in many


def test_off_a_terminal_a_table_is_plain_and_never_folds_a_cell() -> None:
    long_id = "fixmatch__10pct__seed0__1d97ad23" * 4  # wider than the console
    text = _printed([[long_id, "dta_snl[snl=false]"]], terminal=False)
    lines = text.splitlines()
    assert lines[0] == "grid" and lines[-1] == "note" and "│" not in text
    assert lines[3].split() == [long_id, "dta_snl[snl=false]"]
