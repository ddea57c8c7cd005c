"""Figures that do not mislead (issue 21 §5): the majority-class rate, one series per protocol,
the paired-difference figure, no empty panels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.report.figures import (
    majority_rate,
    paired_difference_rows,
    paired_differences,
    protocol_of,
    pseudo_labels_vs_step,
)


def _result(method: str, labels: str, seed: int, top1: float, protocol: str | None = None):
    config = {"protocol": protocol} if protocol else {}
    matrix = [[6, 4], [0, 10]]  # 10 + 10 test images; the larger row is 10 of 20
    return {
        "dataset": "synthfer",
        "method": method,
        "method_label": method,
        "labels": labels,
        "seed": seed,
        "metrics": {"top1": top1, "confusion_matrix": [[6, 4], [0, 30]] if seed else matrix},
        "config": config,
    }


def test_majority_rate_is_the_largest_test_class_share():
    results = [_result("supervised", "10%", 1, 50.0)]  # rows 10 and 30 images
    assert majority_rate(results, "top1") == pytest.approx(75.0)
    assert majority_rate(results, "mean_class_acc") == pytest.approx(50.0)


def test_protocol_defaults_to_shared():
    assert protocol_of(_result("a", "10%", 0, 1.0)) == "shared"
    assert protocol_of(_result("a", "10%", 0, 1.0, "paper")) == "paper"


def test_paired_differences_per_protocol(tmp_path: Path):
    results = [_result("supervised", "10%", s, 50.0 + s) for s in range(3)]
    results += [_result("fixmatch", "10%", s, 55.0 + 2 * s) for s in range(3)]
    results += [_result("fixmatch", "10%", s, 40.0 + s, "paper") for s in range(3)]
    assert paired_differences(results, "top1", "supervised", tmp_path / "d.png") is not None
    # one seed per cell: no interval, no figure
    single = [_result("supervised", "10%", 0, 50.0), _result("fixmatch", "10%", 0, 55.0)]
    assert paired_differences(single, "top1", "supervised", tmp_path / "e.png") is None


def test_paired_differences_pair_only_runs_from_one_backbone_file(tmp_path: Path):
    results = [_result("supervised", "10%", s, 50.0 + s) for s in range(3)]
    results += [_result("fixmatch", "10%", s, 55.0 + 2 * s, "paper") for s in range(3)]
    for result in results:
        file = "1ce16d96aa" if result["method"] == "supervised" else "30439b96bb"
        result["provenance"] = {"pretrain": {"sha256": file}}
    # Same seeds and split, other pretrained bytes: no pair, so no figure.
    assert paired_differences(results, "top1", "supervised", tmp_path / "f.png") is None
    for result in results[3:]:
        result["provenance"]["pretrain"]["sha256"] = "1ce16d96aa"
    assert paired_differences(results, "top1", "supervised", tmp_path / "g.png") is not None


def test_figure_and_tables_pair_a_mixed_cell_alike():
    """One pairing rule for both (harness.report.pairing): a seed with two runs counts as
    their mean in the figure as in the tables, and a seed whose runs started from two backbone
    files drops out of both."""
    from harness.report.frame import results_frame
    from harness.report.pairing import Pairing

    results = [_result("supervised", "10%", s, 50.0 + s) for s in range(3)]
    results += [_result("fixmatch", "10%", s, 55.0 + 2 * s) for s in range(3)]
    results.append(_result("fixmatch", "10%", 0, 65.0))  # seed 0 again: mean 60, Δ +10
    results.append(_result("fixmatch", "10%", 2, 70.0))  # seed 2 again, on other bytes
    results[-1]["provenance"] = {"pretrain": {"sha256": "30439b96bb"}}
    results[5]["provenance"] = {"pretrain": {"sha256": "1ce16d96aa"}}
    [(method, protocol, setting, figure)] = paired_difference_rows(results, "top1", "supervised")
    table = Pairing(results_frame(results), "top1").paired("10%", "fixmatch", "supervised")
    assert (method, protocol, setting) == ("fixmatch", "shared", "10%")
    assert figure == table
    assert figure.n == 2  # seeds 0 and 1; seed 2's runs disagree on the file
    assert figure.mean == pytest.approx(((60.0 - 50.0) + (57.0 - 51.0)) / 2)


def test_a_swept_section_pairs_each_point_with_the_baseline_at_that_point():
    # A sweep over a shared setting is a section of its own where every row, the baseline's
    # too, names the point: fixmatch (optim.lr=0.01) pairs with supervised (optim.lr=0.01).
    results = [_result("supervised", "10%", s, 50.0 + s) for s in range(3)]
    results += [_result("fixmatch", "10%", s, 55.0 + 2 * s) for s in range(3)]
    for result in results:
        result["sweep"] = ["optim.lr=0.01"]
    [(label, _, _, diff)] = paired_difference_rows(results, "top1", "supervised")
    assert label == "fixmatch (optim.lr=0.01)"
    assert (diff.n, diff.mean) == (3, pytest.approx(6.0))


def test_a_shared_baseline_without_the_metric_leaves_the_protocols_own():
    results = [_result("supervised", "10%", s, 50.0 + s) for s in range(3)]
    for result in results:
        result["metrics"].pop("top1")
    results += [_result("supervised", "10%", s, 50.0 + s, "paper") for s in range(3)]
    results += [_result("fixmatch", "10%", s, 60.0 + s, "paper") for s in range(3)]
    [(_, protocol, _, diff)] = paired_difference_rows(results, "top1", "supervised")
    assert (protocol, diff.n, diff.mean) == ("paper", 3, pytest.approx(10.0))


def test_no_panel_for_a_setting_without_pseudo_labels(tmp_path: Path):
    steps = pd.DataFrame(
        [
            {
                "method": "fixmatch",
                "labels": "10%",
                "seed": 0,
                "step": 20,
                "mask_rate": 0.5,
                "pseudo_label_acc": 0.8,
            },
            {
                "method": "supervised",
                "labels": "100%",
                "seed": 0,
                "step": 20,
                "mask_rate": float("nan"),
                "pseudo_label_acc": float("nan"),
            },
        ]
    )
    path = pseudo_labels_vs_step(steps, ["supervised", "fixmatch"], tmp_path / "p.png")
    assert path is not None
    from PIL import Image

    width, _ = Image.open(path).size
    one_setting = pseudo_labels_vs_step(steps.iloc[:1], ["fixmatch"], tmp_path / "q.png")
    assert Image.open(one_setting).size[0] == width  # the 100% column was left out
