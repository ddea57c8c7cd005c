"""Why a method scored what it did: its pseudo-labelling diagnostics beside its accuracy.

Reads the result store and each run's step log (the compact copy beside its result, else
``results/runs/<run>/metrics.jsonl``) and prints, per tag, method variant and label setting
(mean over seeds), the final top-1 and the diagnostics the
methods report, both over the whole run and over its last quarter (where the thresholds have
settled): share of unlabelled samples used, accuracy of their pseudo-labels, mean per-class
threshold, and for SNL the complementary labels per step and how often one was wrong. Beside
top-1 it shows the class-balanced measures (mean class accuracy, macro-F1) and, with
``--classes``, the accuracy on named classes (the rare ones are where threshold rules differ).

    python experiments/diagnostics.py [--results-dir results] [--dataset synthfer] [--tag TAG]
        [--classes Fear,Disgust]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.frame import BASELINE, label_order
from harness.steplog import run_step_log, training_steps
from harness.store import load_results

SIGNALS = ("mask_rate", "pseudo_label_acc", "threshold", "neg_pairs", "neg_error_rate")


def step_log(path: Path) -> pd.DataFrame:
    """The training steps of a step log (plain or the gzipped compact copy) as a frame; see
    :func:`steps_frame`."""
    return steps_frame(training_steps(path))


def steps_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Training-step records (one per step, as :mod:`harness.steplog` reads them) as a frame,
    thresholds averaged over the classes; empty when there are none."""
    frame = pd.DataFrame(records)
    if frame.empty or "step" not in frame:
        return pd.DataFrame()
    if "threshold" in frame:
        frame["threshold"] = frame["threshold"].map(
            lambda t: sum(t) / len(t) if isinstance(t, list) and t else t
        )
    return frame


def run_row(
    result: dict[str, Any], results_dir: Path, classes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One run's accuracy (top-1, mean class accuracy, macro-F1 and the accuracy on each of
    ``classes``), whole-run diagnostic means and last-quarter means."""
    metrics = result["metrics"]
    row: dict[str, Any] = {
        "tag": result.get("tag") or "",
        "method": result["method_label"],
        "labels": result["labels"],
        "seed": result["seed"],
        "top1": metrics["top1"],
        "mean_class_acc": metrics.get("mean_class_acc"),
        "macro_f1": metrics.get("macro_f1"),
    }
    per_class = metrics.get("per_class_acc") or {}
    for name in classes:
        row[f"{name} acc"] = per_class.get(name)
    whole = result.get("diagnostics") or {}
    # The compact copy beside the result (committed), else the full log in runs/<run>/.
    log = steps_frame(run_step_log(results_dir, result))
    last = log[log["step"] >= 0.75 * log["step"].max()] if not log.empty else log
    for name in SIGNALS:
        row[name] = whole.get(name)
        row[f"{name} (last 1/4)"] = last[name].mean() if name in last else None
    return row


def leaderboard_order(table: pd.DataFrame, baseline: set[str]) -> pd.DataFrame:
    """Rows indexed by (tag, labels, method) in the leaderboard's order: label settings by size,
    the baseline's variants (``baseline``: their row labels) first, the rest alphabetical."""

    def key(level: pd.Index) -> pd.Index:
        if level.name == "labels":
            return level.map(label_order)
        if level.name == "method":
            return level.map(lambda m: (m not in baseline, m))
        return level

    return table.sort_index(key=key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="synthfer")
    parser.add_argument("--tag", help="only the runs under this tag ('' for untagged ones)")
    parser.add_argument(
        "--classes", default="", help="comma-separated class names whose accuracy to show"
    )
    args = parser.parse_args()
    results = [
        r
        for r in load_results(args.results_dir)
        if r["dataset"] == args.dataset and (args.tag is None or (r.get("tag") or "") == args.tag)
    ]
    if not results:
        tag = "" if args.tag is None else f" under tag {args.tag!r}"
        raise SystemExit(f"no {args.dataset} results{tag} under {args.results_dir}")
    classes = tuple(name for name in args.classes.split(",") if name)
    baseline = {r["method_label"] for r in results if r["method"] == BASELINE}
    frame = pd.DataFrame([run_row(r, args.results_dir, classes) for r in results])
    signals = frame.columns.drop(["tag", "method", "labels"])
    frame[signals] = frame[signals].apply(pd.to_numeric, errors="coerce")
    table = frame.drop(columns="seed").groupby(["tag", "labels", "method"]).mean(numeric_only=True)
    table.insert(0, "seeds", frame.groupby(["tag", "labels", "method"]).size())
    for name in ("mask_rate", "pseudo_label_acc", "threshold", "neg_error_rate"):
        for column in (name, f"{name} (last 1/4)"):
            table[column] = table[column] * 100
    print("Rates, accuracies and thresholds in %; neg_pairs per step.\n")
    table = leaderboard_order(table.dropna(axis=1, how="all").round(1), baseline)
    print(table.reset_index().to_markdown(index=False))
    # The spread behind each mean: a method whose seeds disagree by 10 points is not ranked.
    per_seed = frame.pivot_table(index=["tag", "labels", "method"], columns="seed", values="top1")
    per_seed.columns = [f"top1 seed {seed}" for seed in per_seed.columns]
    print("\nTop-1 (%) per seed.\n")
    print(leaderboard_order(per_seed.round(1), baseline).reset_index().to_markdown(index=False))


if __name__ == "__main__":
    main()
