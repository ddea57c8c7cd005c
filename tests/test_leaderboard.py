"""The markdown leaderboard on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import scored_result

from harness.leaderboard import (
    ResultsDirError,
    leaderboard_tables,
    render_leaderboard,
    results_frame,
    section_keys,
    write_leaderboard,
)
from harness.store import write_result

RESULTS = [
    scored_result("supervised", "10%", 0, 40.0),
    scored_result("supervised", "10%", 1, 42.0),
    scored_result("supervised", "100%", 0, 80.0),
    scored_result("fixmatch", "10%", 0, 50.0),
    scored_result("fixmatch", "10%", 1, 54.0),
    scored_result("fixmatch", "10%", 2, 52.0),
    scored_result("fixmatch", "25/class", 0, 45.0),
    scored_result("fixmatch", "4000", 0, 60.0),
    scored_result("dta_snl[snl=false]", "10%", 0, 47.0),
    scored_result("dta_snl[snl=false]", "4000", 4, 61.0),
    scored_result("adacm", "25/class", 0, 44.0),
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
    # 10%: fixmatch's best mean has 3 seeds: bold. Supervised pairs with it on seeds 0 and 1
    # (+10, +12: p = 0.063 with one degree of freedom): tied. dta_snl[snl=false] shares one
    # seed with it: untested.
    assert rows["supervised"] == ["–", "–", "41.00 ± 1.41 (2) n.s. Δ-11.0, 3 seeds", "80.00 (1)"]
    assert rows["fixmatch"] == ["45.00 (1)", "60.00 (1)", "**52.00 ± 2.00 (3)**", "–"]
    # 25/class and 4000: the best has a single seed: no claim, no bold, no marks.
    assert rows["adacm"] == ["44.00 (1)", "–", "–", "–"]
    assert rows["dta_snl[snl=false]"] == ["–", "61.00 (1)", "47.00 (1) ?", "–"]
    # A column with a single entry has nothing to beat: no bold.
    assert "**80.00" not in doc
    assert "† Not one experiment" not in doc


def test_macro_f1_table_and_headline_in_the_heading() -> None:
    doc = render_leaderboard(RESULTS)
    assert "## synthfer — headline: top-1 accuracy (%)" in doc
    _, rows = _table(doc, "### macro-F1 (%)")
    assert rows["fixmatch"][2] == "**32.00 ± 2.00 (3)**"


def test_one_seed_makes_no_claim() -> None:
    results = [scored_result("a", "10%", 0, 50.0), scored_result("b", "10%", 0, 40.0)]
    _, rows = _table(render_leaderboard(results), "### top-1 accuracy (%)")
    assert rows == {"a": ["50.00 (1)"], "b": ["40.00 (1)"]}


def test_only_what_the_paired_test_supports() -> None:
    # b is below a by 3.0, 2.9, 3.1 on the three shared splits: significantly below (p = 0.001).
    # c is below by 10, -8, 1: lower on average, but the seeds disagree: not separated, and
    # not close either (the interval is wide): the mark says so, with the seeds it would need.
    a = [60.0, 50.0, 55.0]
    b = [57.0, 47.1, 51.9]
    c = [50.0, 58.0, 54.0]
    results = [
        scored_result(label, "10%", seed, value)
        for label, values in (("a", a), ("b", b), ("c", c))
        for seed, value in enumerate(values)
    ]
    _, rows = _table(render_leaderboard(results), "### top-1 accuracy (%)")
    assert rows["a"] == ["**55.00 ± 5.00 (3)**"]
    assert rows["b"] == ["52.00 ± 4.95 (3)"]
    assert rows["c"] == ["54.00 ± 4.00 (3) n.s. Δ-1.0, >100 seeds"]


def test_equal_means_the_one_with_more_seeds_is_bold() -> None:
    results = [scored_result("a", "10%", s, 50.0 + d) for s, d in ((0, -1), (1, 1))]
    results += [scored_result("b", "10%", s, 50.0 + d) for s, d in ((0, -2), (1, 0), (2, 2))]
    _, rows = _table(render_leaderboard(results), "### top-1 accuracy (%)")
    assert rows == {"a": ["50.00 ± 1.41 (2) ≈"], "b": ["**50.00 ± 2.00 (3)**"]}


def test_paired_differences_against_supervised_and_fixmatch() -> None:
    # The figures: fixmatch - supervised = +2.5, +6.0, +14.0 over seeds 0-2.
    results = [
        scored_result(label, "5%", seed, value)
        for label, values in (
            ("supervised", (40.0, 45.0, 30.0)),
            ("fixmatch", (42.5, 51.0, 44.0)),
            ("dta_snl", (41.0, 50.0, 40.0)),
        )
        for seed, value in enumerate(values)
    ]
    doc = render_leaderboard(results)
    _, rows = _table(doc, "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"] == ["+7.50 [-7.14, +22.14] p=0.16 (3)"]
    assert list(rows) == ["dta_snl", "fixmatch"]
    _, rows = _table(doc, "#### top-1 accuracy (%): paired Δ vs fixmatch")
    assert list(rows) == ["dta_snl"], "supervised is compared in the table above"
    assert rows["dta_snl"][0].startswith("-2.17 [")
    assert "#### macro-F1 (%): paired Δ vs supervised" in doc


def test_pairs_need_the_same_split() -> None:
    results = [scored_result("supervised", "10%", s, 40.0 + s) for s in (0, 1, 2)]
    results += [scored_result("fixmatch", "10%", s, 45.0 + 2 * s) for s in (0, 1, 2)]
    for result in results:
        result["split"] = {"hash": f"split{result['seed']}"}
    results[-1]["split"] = {"hash": "another"}  # fixmatch seed 2 trained on another split
    _, rows = _table(render_leaderboard(results), "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"] == ["+5.50 [-0.85, +11.85] p=0.06 (2)"]


PRETRAIN = {"name": "synth_faces", "key": "df9a09934930"}
FILE_A, FILE_B = "1ce16d96" + "0" * 56, "30439b96" + "0" * 56


def _pretrained(*extra: dict) -> list[dict]:
    """Supervised and FixMatch at 10%, seeds 0–2, from one pretrained backbone file (FILE_A),
    plus ``extra`` fixmatch seed-2 runs (a method config each: another experiment, same row)."""
    results = [
        scored_result("supervised", "10%", s, 40.0 + s, pretrain=PRETRAIN) for s in (0, 1, 2)
    ]
    results += [
        scored_result("fixmatch", "10%", s, 45.0 + 2 * s, pretrain=PRETRAIN) for s in (0, 1, 2)
    ]
    results += [
        scored_result("fixmatch", "10%", 2, 50.0, pretrain=PRETRAIN, method=m) for m in extra
    ]
    for result in results:
        result["provenance"] = {"pretrain": {"key": PRETRAIN["key"], "sha256": FILE_A}}
    return results


def test_pairs_need_the_same_pretrained_backbone_file() -> None:
    # One pretraining key, other bytes on another machine (docs/pretraining.md): seeds that
    # started from different files are not paired, and a cell mixing files is marked ‡.
    results = _pretrained()
    results[-1]["provenance"]["pretrain"]["sha256"] = FILE_B  # fixmatch seed 2
    doc = render_leaderboard(results)
    _, rows = _table(doc, "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"] == ["+5.50 [-0.85, +11.85] p=0.06 (2)"]
    _, rows = _table(doc, "### top-1 accuracy (%)")
    assert rows["fixmatch"][0].endswith("‡")
    assert "- fixmatch at 10%: 2 pretrained backbone files (1ce16d96, 30439b96)" in doc
    assert "key df9a09934930, file 1ce16d96) (5 runs); " in doc
    results[-1]["provenance"]["pretrain"]["sha256"] = FILE_A
    _, rows = _table(render_leaderboard(results), "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"][0].endswith("(3)")


def test_a_seed_whose_runs_started_from_two_files_is_not_paired() -> None:
    # A cell mixing experiments averages a seed's runs; from two backbone files, that mean
    # compares no single input, so the seed drops out of the pairs.
    results = _pretrained({"name": "fixmatch", "p_cutoff": 0.8})
    results[-1]["provenance"]["pretrain"]["sha256"] = FILE_B
    _, rows = _table(render_leaderboard(results), "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"][0].endswith("(2)")
    results[-1]["provenance"]["pretrain"]["sha256"] = FILE_A
    _, rows = _table(render_leaderboard(results), "#### top-1 accuracy (%): paired Δ vs supervised")
    assert rows["fixmatch"][0].endswith("(3)")


def test_affectnet_headline_is_mean_class_accuracy() -> None:
    results = [scored_result("fixmatch", "10%", s, 50.0 + s, dataset="affectnet8") for s in (0, 1)]
    doc = render_leaderboard(results)
    assert "## affectnet8 — headline: mean class accuracy (%)" in doc
    assert "### top-1" not in doc  # (a published row may quote a paper's top-1, labelled)
    _, rows = _table(doc, "### mean class accuracy (%)")
    assert rows["fixmatch"] == ["40.50 ± 0.71 (2)"]


def test_cells_mixing_experiments_get_a_footnote() -> None:
    results = [
        scored_result("fixmatch", "10%", 0, 50.0),
        # A method setting given as an override, not a variant: same row, another experiment
        # (a different optim.lr would be another protocol, so another section: test_sections).
        scored_result("fixmatch", "10%", 1, 52.0, method={"name": "fixmatch", "p_cutoff": 0.8}),
        scored_result("supervised", "10%", 0, 40.0),
        # Only the thread count differs: that does not change the experiment.
        scored_result("supervised", "10%", 1, 41.0, train={"steps": 10, "threads": 4}),
    ]
    doc = render_leaderboard(results)
    _, rows = _table(doc, "### top-1 accuracy (%)")
    assert rows["fixmatch"] == ["**51.00 ± 1.41 (2)** †"]
    assert rows["supervised"] == ["40.50 ± 0.71 (2)"]  # +10.5, +11.0: significantly below
    assert "† Not one experiment" in doc and "(fixmatch at 10%)" in doc


def test_tags_get_their_own_sections() -> None:
    results = [*RESULTS, scored_result("fixmatch", "10%", 0, 70.0, tag="long")]
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
        scored_result("dta_snl", "10%", 0, 50.0),
        scored_result("dta_snl", "10%", 1, 52.0),
        scored_result("dta_snl", "100%", 0, 85.0),
        scored_result("dta_snl[snl=false]", "10%", 1, 49.0),
        scored_result("dta_snl[dta=false]", "10%", 0, 51.5),
    ]
    doc = render_leaderboard(results)
    header, rows = _table(doc, "### Ablations of dta_snl — top-1 accuracy (%)")
    # Only the settings a variant was run at; the full method first.
    assert header == ["variant", "4000", "Δ 4000", "10%", "Δ 10%"]
    assert list(rows) == ["dta_snl", "dta_snl[dta=false]", "dta_snl[snl=false]"]
    assert rows["dta_snl"] == ["–", "–", "51.00 ± 1.41 (2)", "–"]
    # Paired by seed: 47 - 50 and 49 - 52, a difference without spread.
    assert rows["dta_snl[snl=false]"] == [
        "61.00 (1)",
        "–",
        "48.00 ± 1.41 (2)",
        "-3.00 [-3.00, -3.00] p<0.001 (2)",
    ]
    assert rows["dta_snl[dta=false]"] == ["–", "–", "51.50 (1)", "+1.50 (1)"]
    # No variants of fixmatch: no ablation table for it.
    assert "Ablations of fixmatch" not in doc


def test_no_ablation_table_without_variants() -> None:
    results = [r for r in RESULTS if "[" not in r["method_label"]]
    assert "Ablations" not in render_leaderboard(results)


def test_sections_list_the_commands_that_made_them() -> None:
    argv = ["/opt/bin/bench", "run", "--methods", "fixmatch,dta_snl[snl=false]", "--seeds", "0-1"]
    results = [scored_result("fixmatch", "10%", s, 50.0) for s in (0, 1)]
    for result in results:
        result["provenance"] = {"command": argv}
    results.append(scored_result("supervised", "10%", 0, 40.0))  # no command recorded
    doc = render_leaderboard(results)
    command = "bench run --methods 'fixmatch,dta_snl[snl=false]' --seeds 0-1"
    assert f"Produced by:\n\n- `{command}`\n" in doc
    assert doc.count("- `bench run") == 1


def test_protocol_and_cost_per_section() -> None:
    results = [scored_result("fixmatch", "10%", s, 50.0 + s) for s in (0, 1)]
    for seed, result in enumerate(results):
        result["config"].update(
            data={"image_size": 48, "batch_size": 64, "unlabelled_ratio": 7},
            backbone={"name": "resnet18", "weights": None},
            ema={"decay": 0.999},
        )
        result["split"] = {"num_labelled": 30 + seed, "per_class": {"Fear": 3 + seed, "Joy": 27}}
        result["provenance"] = {
            "git": {"commit": f"{seed}abcdef0123", "dirty": seed == 1},
            "device": "cpu",
            "torch_threads": 2,
        }
        result["timing"]["train_seconds"] = 600.0 * (seed + 1)
    doc = render_leaderboard(results)
    assert "- **backbone**: `resnet18` (random init)" in doc
    assert "- **image size**: 48 px" in doc
    assert "μ = 7" in doc and "- **EMA**: decay 0.999" in doc
    assert "  - 10%: 30–31 (Fear 3–4 · Joy 27)" in doc
    assert "- **commits**: 0abcdef (1 run); 1abcdef+dirty (1 run)" in doc
    _, rows = _table(doc, "### top-1 accuracy (%)")
    assert rows["fixmatch"] == ["50.50 ± 0.71 (2) ‡"]
    assert "- fixmatch at 10%: 2 commits (0abcdef, 1abcdef+dirty)" in doc
    _, rows = _table(doc, "### Cost")
    assert rows["fixmatch"] == ["15.0 min · cpu, 2 threads"]
    assert "2 runs, 0.5 CPU-hours of training (1.0 core-hours" in doc
    # train.threads in the config is what the engine trained with (older results recorded
    # the process's count in their provenance).
    results[1]["config"]["train"]["threads"] = 1
    # A pretrained run names its pretraining (harness/pretrain.py records it), not "random init";
    # beside a run from random weights it is another protocol, so another section.
    results[1]["config"]["pretrain"] = {"name": "synth_faces", "key": "df9a09934930"}
    results[1]["provenance"]["pretrain"] = {"identity_top1": 70.45}
    assert len(section_keys(results)) == 2
    results[0]["config"]["pretrain"] = results[1]["config"]["pretrain"]
    results[0]["provenance"]["pretrain"] = results[1]["provenance"]["pretrain"]
    doc = render_leaderboard(results)
    assert "- **torch threads**: 2 (1 run); 1 (1 run)" in doc
    assert (
        "- **backbone**: `resnet18` (pretrained: synth_faces, key df9a09934930; identity top-1 "
        "70.45% held out)"
    ) in doc
    assert "the face-recognition pretraining the runs share" not in render_leaderboard(results[:1])
    results[1]["provenance"]["pretrain"].update(key="df9a09934930", train_seconds=1166.4)
    assert "trained once (docs/pretraining.md): `df9a09934930` 19.4 min." in (
        render_leaderboard(results)
    )
    _, rows = _table(doc, "### Cost")
    assert rows["fixmatch"] == ["15.0 min · cpu, 1–2 threads"]
    assert "0.0 GPU-hours" in doc


def test_a_missing_results_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsDirError, match="does not exist"):
        write_leaderboard(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(ResultsDirError, match="is not a folder"):
        write_leaderboard(tmp_path / "file")
