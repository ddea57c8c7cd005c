"""A leaderboard section holds one protocol (issue 23 item 2): runs are grouped by everything
in their config but the method with its own settings, the labels, the seed and the tag; a
section that splits is named by what differs, and figures are drawn per section."""

from __future__ import annotations

from pathlib import Path

from helpers import DEBUG, GRID, protocol_result

from harness.leaderboard import leaderboard_tables, section_keys, write_leaderboard
from harness.report.build import write_report
from harness.report.export import summary_rows
from harness.store import write_result


def test_a_short_schedule_is_its_own_section_named_by_what_differs() -> None:
    tables = leaderboard_tables(GRID + DEBUG)
    assert list(tables) == [
        "synthfer · train.steps=1200",
        "synthfer · train.steps=60",
    ]
    long_run, debug = tables.values()
    assert "10%" not in long_run and "5%" in long_run and "25%" in long_run
    assert "10%" in debug and "5%" not in debug
    # One protocol alone keeps the plain name.
    assert list(leaderboard_tables(GRID)) == ["synthfer"]


def test_the_method_own_settings_and_the_run_keys_do_not_split_a_section() -> None:
    results = [
        *GRID,
        # dta_snl's config drives data.balanced_sampling: one of its own settings.
        protocol_result("dta_snl", "5%", 0, 55.0, data__balanced_sampling=True),
        # A variant's settings, the threads and the log interval are no protocol.
        protocol_result(
            "fixmatch[p_cutoff=0.8]", "5%", 0, 57.0, train__threads=4, train__log_every=5
        ),
    ]
    assert section_keys(results) == ["synthfer"]


def test_per_method_protocol_keeps_each_methods_declared_recipe_in_one_section() -> None:
    paper = [
        protocol_result("fixmatch", "5%", 0, 60.0, protocol="paper", data__unlabelled_ratio=7),
        protocol_result(
            "adacm", "5%", 0, 58.0, protocol="paper", optim__name="adamw", optim__lr=5e-4
        ),
    ]
    assert section_keys(paper) == ["synthfer"], "each method's paper recipe is its own"
    both = section_keys(GRID + paper)
    assert both == ["synthfer · protocol=paper", "synthfer · protocol=shared"]
    # Under the shared protocol the optimiser is the section's, not the method's.
    shared = [*GRID, protocol_result("adacm", "5%", 0, 58.0, optim__lr=5e-4)]
    assert section_keys(shared) == ["synthfer · optim.lr=0.0005", "synthfer · optim.lr=0.03"]


def test_tags_stay_names_and_split_only_by_protocol() -> None:
    tagged = [protocol_result("fixmatch", "5%", s, 60.0, tag="long") for s in (0, 1)]
    assert section_keys(GRID + tagged) == ["synthfer", "synthfer [long]"]
    mixed = [
        *tagged,
        protocol_result("fixmatch", "5%", 2, 20.0, tag="long", backbone__name="resnet18"),
    ]
    assert section_keys(mixed) == [
        "synthfer [long] · backbone.name=fer_cnn",
        "synthfer [long] · backbone.name=resnet18",
    ]


def test_many_differences_are_summed_up_and_names_stay_unique() -> None:
    changes = {f"data__extra{i}": i for i in range(6)}
    results = [*GRID[:2], protocol_result("supervised", "5%", 0, 30.0, **changes)]
    names = section_keys(results)
    assert len(names) == 2 and all(name.endswith("+2 more") for name in names)
    clash = [
        *results,
        protocol_result("supervised", "5%", 0, 30.0, **{**changes, "data__extra5": 9}),
    ]
    names = section_keys(clash)
    assert len(set(names)) == 3 and sum("#" in name for name in names) >= 2


def test_report_and_exports_keep_sections_apart(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    for result in GRID + DEBUG:
        write_result(results_dir / "synthfer" / f"{result['run_id']}.json", result)
    board, figures = write_report(results_dir)
    folders = {path.parent.name for path in figures}
    assert folders == {"synthfer_train.steps=1200", "synthfer_train.steps=60"}
    text = board.read_text()
    assert "## synthfer · train.steps=60 — headline" in text
    assert "figures/synthfer_train.steps=60/" in text
    summary = summary_rows(GRID + DEBUG)
    assert set(summary["section"]) == {"synthfer · train.steps=1200", "synthfer · train.steps=60"}
    debug_rows = summary[summary["section"] == "synthfer · train.steps=60"]
    assert set(debug_rows["labels"]) == {"10%"}
    assert write_leaderboard(results_dir).read_text().count("## synthfer ·") == 2
