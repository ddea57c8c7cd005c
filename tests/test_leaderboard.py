"""The markdown leaderboard on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.leaderboard import (
    leaderboard_tables,
    render_leaderboard,
    results_frame,
    write_leaderboard,
)
from harness.spec import config_hash
from harness.store import write_result


def _result(
    method_label: str,
    labels: str,
    seed: int,
    top1: float,
    *,
    dataset: str = "synthfer",
    tag: str = "",
    **config_extra: object,
) -> dict:
    method = method_label.split("[")[0]
    config = {
        "seed": seed,
        "labels": labels,
        "tag": tag,
        "method": {"name": method},
        "train": {"steps": 10},
        **config_extra,
    }
    return {
        "dataset": dataset,
        "method": method,
        "method_label": method_label,
        "labels": labels,
        "seed": seed,
        "tag": tag,
        "config_hash": config_hash(config),
        "config": config,
        "metrics": {"top1": top1, "mean_class_acc": top1 - 10, "macro_f1": top1 - 20},
        "split": {"num_labelled": 10},
        "provenance": {},
        "timing": {"finished": f"2026-01-{seed + 1:02d}T00:00:00+00:00"},
    }


RESULTS = [
    _result("supervised", "10%", 0, 40.0),
    _result("supervised", "10%", 1, 42.0),
    _result("supervised", "100%", 0, 80.0),
    _result("fixmatch", "10%", 0, 50.0),
    _result("fixmatch", "10%", 1, 54.0),
    _result("fixmatch", "10%", 2, 52.0),
    _result("fixmatch", "25/class", 0, 45.0),
    _result("fixmatch", "4000", 0, 60.0),
    _result("dta_snl[snl=false]", "10%", 0, 47.0),
    _result("dta_snl[snl=false]", "4000", 4, 61.0),
    _result("adacm", "25/class", 0, 44.0),
]


def _table(markdown: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {row name: cells} of the first table after ``heading``."""
    after = markdown.split(heading, 1)[1]
    lines = []
    for line in after.splitlines()[1:]:
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], {row[0]: row[1:] for row in cells[2:]}


def test_results_frame_has_one_row_per_run() -> None:
    frame = results_frame(RESULTS)
    assert len(frame) == len(RESULTS)
    assert frame.loc[0, "method_label"] == "supervised" and frame.loc[0, "top1"] == 40.0
    assert set(frame["tag"]) == {""}


def test_rows_columns_cells_and_bold_best() -> None:
    doc = render_leaderboard(RESULTS)
    header, rows = _table(doc, "### top-1 accuracy (%)")
    # Columns: per-class counts, totals, fractions by size. Rows: supervised, then a-z.
    assert header == ["method", "25/class", "4000", "10%", "100%"]
    assert list(rows) == ["supervised", "adacm", "dta_snl[snl=false]", "fixmatch"]
    assert rows["supervised"] == ["–", "–", "41.00 ± 1.41 (2)", "80.00 (1)"]
    assert rows["fixmatch"] == ["**45.00 (1)**", "60.00 (1)", "**52.00 ± 2.00 (3)**", "–"]
    assert rows["adacm"] == ["44.00 (1)", "–", "–", "–"]
    assert rows["dta_snl[snl=false]"] == ["–", "**61.00 (1)**", "47.00 (1)", "–"]
    # A column with a single entry has nothing to beat: no bold.
    assert "**80.00" not in doc
    assert "†" not in doc


def test_macro_f1_table_and_headline_in_the_heading() -> None:
    doc = render_leaderboard(RESULTS)
    assert "## synthfer — headline: top-1 accuracy (%)" in doc
    _, rows = _table(doc, "### macro-F1 (%)")
    assert rows["fixmatch"][2] == "**32.00 ± 2.00 (3)**"


def test_ties_are_all_bold() -> None:
    results = [_result("a", "10%", 0, 50.0), _result("b", "10%", 0, 50.0)]
    _, rows = _table(render_leaderboard(results), "### top-1 accuracy (%)")
    assert rows == {"a": ["**50.00 (1)**"], "b": ["**50.00 (1)**"]}


def test_affectnet_headline_is_mean_class_accuracy() -> None:
    results = [_result("fixmatch", "10%", s, 50.0 + s, dataset="affectnet8") for s in (0, 1)]
    doc = render_leaderboard(results)
    assert "## affectnet8 — headline: mean class accuracy (%)" in doc
    assert "top-1" not in doc
    _, rows = _table(doc, "### mean class accuracy (%)")
    assert rows["fixmatch"] == ["40.50 ± 0.71 (2)"]


def test_cells_mixing_experiments_get_a_footnote() -> None:
    results = [
        _result("fixmatch", "10%", 0, 50.0),
        _result("fixmatch", "10%", 1, 52.0, optim={"lr": 0.1}),
        _result("supervised", "10%", 0, 40.0),
        # Only the thread count differs: that does not change the experiment.
        _result("supervised", "10%", 1, 41.0, train={"steps": 10, "threads": 4}),
    ]
    doc = render_leaderboard(results)
    _, rows = _table(doc, "### top-1 accuracy (%)")
    assert rows["fixmatch"] == ["**51.00 ± 1.41 (2)** †"]
    assert rows["supervised"] == ["40.50 ± 0.71 (2)"]
    assert "† Not one experiment" in doc and "(fixmatch at 10%)" in doc


def test_tags_get_their_own_sections() -> None:
    results = [*RESULTS, _result("fixmatch", "10%", 0, 70.0, tag="long")]
    tables = leaderboard_tables(results)
    assert list(tables) == ["synthfer", "synthfer [long]"]
    _, rows = _table(tables["synthfer [long]"], "### top-1 accuracy (%)")
    assert rows == {"fixmatch": ["70.00 (1)"]}
    _, rows = _table(tables["synthfer"], "### top-1 accuracy (%)")
    assert rows["fixmatch"][2] == "**52.00 ± 2.00 (3)**", "tagged run kept out"
    assert "## synthfer [long] — headline" in render_leaderboard(results)


def test_document_header_is_deterministic() -> None:
    doc = render_leaderboard(RESULTS)
    assert doc.startswith("# fer-bench leaderboard\n")
    assert "Generated by `bench leaderboard` from 11 results" in doc
    assert "newest finished 2026-01-05T00:00:00+00:00" in doc
    assert render_leaderboard(list(reversed(RESULTS))) == doc, "input order does not matter"


def test_write_leaderboard_reads_the_store(tmp_path: Path) -> None:
    for i, result in enumerate(RESULTS):
        write_result(tmp_path / result["dataset"] / f"{i}.json", result)
    (tmp_path / "synthfer" / "junk.json").write_text("{")
    with pytest.warns(UserWarning, match="junk.json"):
        path = write_leaderboard(tmp_path)
    assert path == tmp_path / "leaderboard.md"
    assert path.read_text() == render_leaderboard(RESULTS)
    with pytest.warns(UserWarning, match="junk.json"):
        other = write_leaderboard(tmp_path, tmp_path / "out" / "board.md")
    assert other.read_text() == path.read_text()
    assert json.loads((tmp_path / "synthfer" / "0.json").read_text()) == RESULTS[0]


def test_no_results() -> None:
    assert "from 0 results" in render_leaderboard([])
    assert leaderboard_tables([]) == {}


def test_variants_get_an_ablation_table_with_differences() -> None:
    results = [
        *RESULTS,
        _result("dta_snl", "10%", 0, 50.0),
        _result("dta_snl", "10%", 1, 52.0),
        _result("dta_snl", "100%", 0, 85.0),
        _result("dta_snl[snl=false]", "10%", 1, 49.0),
        _result("dta_snl[dta=false]", "10%", 0, 51.5),
    ]
    doc = render_leaderboard(results)
    header, rows = _table(doc, "### Ablations of dta_snl — top-1 accuracy (%)")
    # Only the settings a variant was run at; the full method first.
    assert header == ["variant", "4000", "Δ 4000", "10%", "Δ 10%"]
    assert list(rows) == ["dta_snl", "dta_snl[dta=false]", "dta_snl[snl=false]"]
    assert rows["dta_snl"] == ["–", "–", "51.00 ± 1.41 (2)", "–"]
    assert rows["dta_snl[snl=false]"] == ["61.00 (1)", "–", "48.00 ± 1.41 (2)", "-3.00"]
    assert rows["dta_snl[dta=false]"] == ["–", "–", "51.50 (1)", "+0.50"]
    # No variants of fixmatch: no ablation table for it.
    assert "Ablations of fixmatch" not in doc


def test_no_ablation_table_without_variants() -> None:
    results = [r for r in RESULTS if "[" not in r["method_label"]]
    assert "Ablations" not in render_leaderboard(results)


def test_sections_list_the_commands_that_made_them() -> None:
    argv = ["/opt/bin/bench", "run", "--methods", "fixmatch,dta_snl[snl=false]", "--seeds", "0-1"]
    results = [_result("fixmatch", "10%", s, 50.0) for s in (0, 1)]
    for result in results:
        result["provenance"] = {"command": argv}
    results.append(_result("supervised", "10%", 0, 40.0))  # no command recorded
    doc = render_leaderboard(results)
    command = "bench run --methods 'fixmatch,dta_snl[snl=false]' --seeds 0-1"
    assert f"Produced by:\n\n- `{command}`\n" in doc
    assert doc.count("- `bench run") == 1
