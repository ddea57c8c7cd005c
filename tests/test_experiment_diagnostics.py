"""experiments/diagnostics.py: reading step logs and summarising runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from helpers import result_dict

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("diagnostics", ROOT / "experiments/diagnostics.py")
assert _spec is not None and _spec.loader is not None
diagnostics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnostics)


def _write_log(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_step_log_keeps_training_steps_once_and_averages_thresholds(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    _write_log(
        log,
        [
            {"step": 10, "mask_rate": 0.1, "threshold": [0.5, 0.7]},
            {"step": 20, "mask_rate": 0.2, "threshold": [0.6, 0.8]},
            {"event": "eval", "step": 20, "top1": 50.0},
            {"step": 20, "mask_rate": 0.3, "threshold": [0.6, 0.8]},  # logged again on resume
        ],
    )
    frame = diagnostics.step_log(log)
    assert frame["step"].tolist() == [10, 20]
    assert frame["mask_rate"].tolist() == [0.1, 0.3]
    assert frame["threshold"].tolist() == [0.6, 0.7]
    assert diagnostics.step_log(tmp_path / "missing.jsonl").empty


def test_run_row_reads_whole_run_and_last_quarter(tmp_path: Path) -> None:
    _write_log(
        tmp_path / "runs/r1/metrics.jsonl",
        [{"step": s, "mask_rate": s / 100, "neg_pairs": 4.0} for s in range(10, 101, 10)],
    )
    result = result_dict("dta_snl", "5%", 0, 61.0, run_id="r1", diagnostics={"mask_rate": 0.55})
    row = diagnostics.run_row(result, tmp_path)
    assert row["top1"] == 61.0 and row["mask_rate"] == 0.55
    # Last quarter: steps >= 75, i.e. 80, 90, 100.
    assert abs(row["mask_rate (last 1/4)"] - 0.9) < 1e-9
    assert row["neg_pairs (last 1/4)"] == 4.0
    assert row["pseudo_label_acc"] is None


def test_run_row_prefers_the_compact_copy_beside_the_result(tmp_path: Path) -> None:
    """The committed copy (``<dataset>/<run>.steps.jsonl.gz``) is read where it exists, so the
    diagnostics of committed runs can be recomputed on any clone."""
    import gzip

    (tmp_path / "synthfer").mkdir()
    with gzip.open(tmp_path / "synthfer/r1.steps.jsonl.gz", "wt") as file:
        file.write("".join(json.dumps({"step": s, "mask_rate": 0.5}) + "\n" for s in (10, 20)))
    _write_log(tmp_path / "runs/r1/metrics.jsonl", [{"step": 10, "mask_rate": 0.1}])
    result = result_dict("fixmatch", "5%", 0, 50.0, run_id="r1", tag="fidelity", diagnostics={})
    row = diagnostics.run_row(result, tmp_path)
    assert row["mask_rate (last 1/4)"] == 0.5 and row["tag"] == "fidelity"


def test_run_row_reads_the_balanced_measures_and_named_classes(tmp_path: Path) -> None:
    metrics = {
        "top1": 38.2,
        "mean_class_acc": 14.7,
        "macro_f1": 9.6,
        "per_class_acc": {"Fear": 0.0, "Happiness": 96.0},
    }
    result = result_dict("flexmatch", "10%", 1, run_id="r1", metrics=metrics)
    row = diagnostics.run_row(result, tmp_path, classes=("Fear", "Happiness", "Contempt"))
    assert (row["mean_class_acc"], row["macro_f1"]) == (14.7, 9.6)
    assert (row["Fear acc"], row["Happiness acc"], row["Contempt acc"]) == (0.0, 96.0, None)


def test_tables_follow_the_leaderboard_order() -> None:
    import pandas as pd

    index = pd.MultiIndex.from_tuples(
        [("t", lab, m) for lab in ("10%", "100%", "25%", "5%") for m in ("adacm", "supervised")],
        names=["tag", "labels", "method"],
    )
    ordered = diagnostics.leaderboard_order(
        pd.DataFrame({"top1": range(8)}, index=index), baseline={"supervised"}
    )
    assert [lab for _, lab, _ in ordered.index][::2] == ["5%", "10%", "25%", "100%"]
    assert [m for _, _, m in ordered.index][:2] == ["supervised", "adacm"]


_compare_spec = importlib.util.spec_from_file_location(
    "compare_tags", ROOT / "experiments/compare_tags.py"
)
assert _compare_spec is not None and _compare_spec.loader is not None
compare_tags = importlib.util.module_from_spec(_compare_spec)
_compare_spec.loader.exec_module(compare_tags)


def test_compare_tags_pairs_a_row_across_two_tags_by_seed() -> None:
    def result(tag: str, labels: str, seed: int, top1: float) -> dict:
        return result_dict("supervised", labels, seed, top1, tag=tag)

    results = [
        *(result("pre", "5%", s, v) for s, v in [(0, 50.0), (1, 54.0), (2, 52.0)]),
        *(result("", "5%", s, v) for s, v in [(0, 45.0), (1, 48.0)]),  # seed 2 not run
        result("pre", "25%", 0, 80.0),  # no untagged twin: no row
    ]
    table = compare_tags.compare(compare_tags.runs_frame(results, "top1"), "pre", "")
    (row,) = table.to_dict("records")
    assert row["labels"] == "5%" and row["pre mean"] == 52.0 and row[" mean"] == 46.5
    # Only the seeds both tags ran are paired: (50 - 45, 54 - 48) = (5, 6).
    assert row["pre − "].startswith("+5.50 [") and row["pre − "].endswith("(2)")


def test_compare_tags_pairs_no_seed_across_two_backbone_files() -> None:
    # The leaderboard's rule: a rebuilt pretrained backbone has other bytes, so a seed whose two
    # runs started from different files is shown but not paired.
    results = []
    for tag, file in (("long", "30439b96aa"), ("short", "1ce16d96bb")):
        for seed, top1 in ((0, 70.0 + 5 * (tag == "long")), (1, 72.0 + 4 * (tag == "long"))):
            result = result_dict("flexmatch", "10%", seed, top1, tag=tag)
            result["provenance"] = {"pretrain": {"sha256": file}}
            results.append(result)
    table = compare_tags.compare(compare_tags.runs_frame(results, "top1"), "long", "short")
    (row,) = table.to_dict("records")
    assert row["long − short"] == "no seed on the same inputs"
    results[-1]["provenance"]["pretrain"]["sha256"] = "30439b96aa"  # seed 1 now on one file
    (row,) = compare_tags.compare(
        compare_tags.runs_frame(results, "top1"), "long", "short"
    ).to_dict("records")
    assert row["long − short"].startswith("+4.00") and row["long − short"].endswith("(1)")
