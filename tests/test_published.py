"""Published numbers beside measured ones (references/*.yaml), and the best evaluation as a
metric labelled as chosen on the test set."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import scored_result

from harness.errors import ConfigError
from harness.leaderboard import render_leaderboard
from harness.report.frame import METRIC_NAMES, results_frame
from harness.report.published import load_references, protocol_tag, section_references


def _result(method: str, labels: str, seed: int, top1: float, dataset: str, tag: str = "") -> dict:
    """A scored result with two evaluations, the best (step 5) 3 points above the final."""
    result = scored_result(method, labels, seed, top1, dataset=dataset, tag=tag)
    result["evaluations"] = [
        {"step": 5, "top1": top1 + 3.0, "mean_class_acc": top1 - 5, "macro_f1": top1 - 20},
        {"step": 10, "top1": top1, "mean_class_acc": top1 - 10, "macro_f1": top1 - 21},
    ]
    result["best"] = {"step": 5, "top1": top1 + 3.0, "mean_class_acc": top1 - 5}
    return result


def test_the_committed_references_load_and_name_their_source() -> None:
    references = load_references()
    ssfer = [r for r in references if r.file == "references/ssfer.yaml"]
    assert len(ssfer) == 12
    raf10 = next(r for r in ssfer if r.dataset == "rafdb" and r.labels == "10%")
    assert (raf10.value, raf10.line, raf10.metric, raf10.protocol) == (85.07, 45, "top1", "own")
    assert raf10.quote == "SSFER-10% | RAF-DB | 85.07"
    # The quote is the README's line (spaces collapsed): the number is where the file says.
    assert "85.07" in raf10.quote and "github.com/zhelishisongjie/SSFER" in raf10.code


def test_a_section_shows_the_published_row_and_the_gap() -> None:
    results = [_result("fixmatch", "10%", s, 80.0 + s, "rafdb") for s in (0, 1)]
    doc = render_leaderboard(results)
    heading = "#### Published beside measured: top-1 accuracy (%) — SSFER"
    assert heading in doc
    block = doc.split(heading, 1)[1]
    assert "| **published**: SSFER | 85.07 |" in block
    # fixmatch: mean 80.5 over two seeds, 85.07 published: Δ = -4.57.
    assert "| fixmatch | 80.50 ± 0.71 (2); Δ -4.57 |" in block
    assert "its own protocol" in block and "line 45" in block
    # Only the settings the section has: SSFER's 5% and 25% rows are not shown.
    assert "80.96" not in block.split("####", 1)[0]


def test_a_protocols_rows_show_only_in_that_protocols_section(tmp_path: Path) -> None:
    (tmp_path / "paper.yaml").write_text(
        "citation: A paper\ncode: github.com/x/y\nprotocol: rafdb_adacm\nmetric: best_top1\n"
        "rows:\n  - {method: adacm, dataset: rafdb, labels: 'adacm:4000', value: 85.0, "
        "line: 3, quote: 'Ada-CM 85.0'}\n"
    )
    refs = load_references(tmp_path)
    tag = protocol_tag("rafdb_adacm")
    assert tag == "rafdb-adacm"
    assert section_references(refs, "rafdb", tag, {"adacm:4000"}) == list(refs)
    assert section_references(refs, "rafdb", "", {"adacm:4000"}) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("citation: a\ncode: b\nprotocol: own\nmetric: top5\nrows: []\n", "metric 'top5'"),
        ("citation: a\ncode: b\nprotocol: nosuch\nmetric: top1\nrows: []\n", "'nosuch' is not"),
        (
            "citation: a\ncode: b\nprotocol: own\nmetric: top1\n"
            "rows:\n  - {method: m, dataset: rafdb, labels: 10%, value: 1}\n",
            "references/bad.yaml, row 1: expected the fields",
        ),
        (
            "citation: a\ncode: b\nprotocol: own\nmetric: top1\n"
            "rows:\n  - {method: m, dataset: rafdb, labels: ten, value: 1, line: 1, quote: q}\n",
            "references/bad.yaml, row 1: cannot read --labels 'ten'",
        ),
    ],
)
def test_a_bad_reference_file_is_named_with_its_row(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_references(tmp_path)


def test_best_is_the_best_evaluation_and_says_it_was_chosen_on_the_test_set() -> None:
    frame = results_frame([_result("fixmatch", "10%", 0, 80.0, "rafdb")])
    assert frame.loc[0, "best_top1"] == 83.0 and frame.loc[0, "top1"] == 80.0
    assert frame.loc[0, "best_mean_class_acc"] == 75.0  # its own best, not the top-1 best's
    for name in ("best_top1", "best_mean_class_acc", "best_macro_f1"):
        assert "chosen on the test set" in METRIC_NAMES[name]
    doc = render_leaderboard([_result("fixmatch", "10%", s, 80.0, "rafdb") for s in (0, 1)])
    assert "### best top-1 over evaluations (%, chosen on the test set)" in doc
    assert doc.index("### top-1 accuracy (%)") < doc.index("### best top-1")  # headline first
