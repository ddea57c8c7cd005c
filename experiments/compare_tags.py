"""One protocol against another: the same method and label setting under two tags, paired by seed.

The leaderboard compares methods within a section (one tag). This compares a row across two
sections — e.g. the supervised baseline with face-recognition pretraining (tag ``synth-faces``)
against the same runs from random weights (tag ``from-scratch``). Every seed draws one labelled
split per (dataset, label setting) whatever the tag, so the two runs of a seed saw the same
labelled images and the comparison is paired (:mod:`harness.stats`) — on the leaderboard's rule
(:mod:`harness.report.pairing`): a seed whose two runs started from different pretrained backbone
files (a rebuilt cache, another machine) or different splits is shown but not paired.

    python experiments/compare_tags.py synth-faces from-scratch [--metric top1] [--method NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.frame import METRIC_NAMES, label_order, results_frame
from harness.report.pairing import Pairing
from harness.stats import format_difference
from harness.store import load_results


def runs_frame(results: list[dict[str, Any]], metric: str) -> pd.DataFrame:
    """One row per run: tag, row label (method variant), label setting, seed and the metric, from
    the leaderboard's own frame (so a row here is a row there)."""
    columns = ["tag", "method_label", "labels", "seed", "split_hash", "pretrain_file", metric]
    return results_frame(results)[columns].rename(
        columns={"method_label": "method", metric: "value"}
    )


def compare(frame: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per (method, label setting) present under both tags: each tag's per-seed values and mean,
    and ``a - b`` over the seeds both have on the same inputs (mean, 95 % t interval, paired
    t-test p)."""
    rows = []
    both = frame[frame["tag"].isin([a, b])]
    # One row per method and tag, so that the leaderboard's pairing compares the two tags.
    keyed = both.assign(method_label=both["method"] + "@" + both["tag"], value=both["value"])
    pairing = Pairing(keyed, "value")
    for (method, labels), cell in both.groupby(["method", "labels"]):
        if cell.duplicated(["tag", "seed"]).any():
            raise SystemExit(f"{method} at {labels}: two runs of one seed under one tag")
        wide = cell.pivot(index="seed", columns="tag", values="value")
        if a not in wide or b not in wide:
            continue
        row: dict[str, Any] = {"method": method, "labels": labels}
        for tag in (a, b):
            values = wide[tag].dropna()
            row[f"{tag} per seed"] = " · ".join(f"s{seed} {v:.1f}" for seed, v in values.items())
            row[f"{tag} mean"] = round(values.mean(), 2)
        diff = pairing.paired(labels, f"{method}@{a}", f"{method}@{b}")
        row[f"{a} − {b}"] = format_difference(diff) if diff else "no seed on the same inputs"
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_order"] = table["labels"].map(label_order)
    return table.sort_values(["method", "_order"]).drop(columns="_order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="tag of the first protocol ('' for untagged runs)")
    parser.add_argument("b", help="tag of the second protocol")
    parser.add_argument("--metric", default="top1", choices=sorted(METRIC_NAMES))
    parser.add_argument("--method", help="only this method variant")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="synthfer")
    args = parser.parse_args()
    results = [r for r in load_results(args.results_dir) if r["dataset"] == args.dataset]
    frame = runs_frame(results, args.metric)
    if args.method:
        frame = frame[frame["method"] == args.method]
    table = compare(frame, args.a, args.b)
    if table.empty:
        raise SystemExit(
            f"no method and label setting has runs under both {args.a!r} and {args.b!r}"
        )
    print(f"{args.metric} (%); a − b: mean [95% t interval] paired t-test p (pairs)\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
