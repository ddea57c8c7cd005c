"""Long listings are plain aligned text (rich would take minutes on 10,000 rows)."""

from __future__ import annotations

import io

from rich.console import Console

from harness.tables import RICH_ROWS, print_table


def _printed(rows: list[list[str]]) -> str:
    out = io.StringIO()
    print_table(Console(file=out, width=120), "grid", ("run", "method"), rows, caption="note")
    return out.getvalue()


def test_a_screenful_is_a_rich_table_and_more_is_plain_text() -> None:
    few = _printed([["a__1", "dta_snl[snl=false]"]])
    assert "│ a__1 │ dta_snl[snl=false] │" in few and "note" in few  # escaped, not markup
    many = _printed([[f"r{i}", "fixmatch"] for i in range(RICH_ROWS + 1)])
    lines = many.splitlines()
    assert lines[0] == "grid" and lines[1].split() == ["run", "method"]
    assert lines[3].split() == ["r0", "fixmatch"] and lines[-1] == "note"
    assert len(lines) == RICH_ROWS + 1 + 4 and "│" not in many
