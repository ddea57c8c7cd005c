"""The probe table of docs/methods_experiment.md (issue 21 §3): each probe of FlexMatch at 10%,
seed 0 (results/probes/, tags probe-*) beside the committed run it changes one thing of, and
Ada-CM under protocol=paper beside its shared-protocol run; every figure read from the results
and their step logs.

    python experiments/probe_table.py [--results-dir results]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.health import prior_entropy, result_health
from harness.steplog import run_step_log
from harness.store import load_results

# (label in the table, results folder under --results-dir ("" = the main one), method, tag)
ROWS = [
    ("committed run (shared protocol)", "", "flexmatch", "synth-faces"),
    ("rerun of it under today's code", "probes", "flexmatch", "probe-baseline"),
    ("lr 0.01", "probes", "flexmatch", "probe-lr0.01"),
    ("threshold warm-up off", "probes", "flexmatch[thresh_warmup=false]", "probe-no-warmup"),
    ("λu ramped over the first 10%", "probes", "flexmatch[lambda_u_ramp=0.1]", "probe-ramp0.1"),
    ("μ = 7 at ~equal cost (batch 16 + 112)", "probes", "flexmatch", "probe-mu7-b16"),
    ("3× schedule (2,400 steps)", "probes", "flexmatch", "probe-steps2400"),
    ("paper recipe (μ = 7, EMA 0.999)", "", "flexmatch", "synth-faces-paper"),
    ("Ada-CM, shared protocol", "", "adacm", "synth-faces"),
    ("Ada-CM, paper (AdamW 5e-4, 16 + 16)", "", "adacm", "synth-faces-paper"),
    (
        "Ada-CM, paper, no contrastive loss (λs = 0)",
        "probes",
        "adacm[lambda_s=0]",
        "probe-adacm-no-contrastive",
    ),
    ("Ada-CM, paper, Ls between two weak views", "probes", "adacm", "probe-adacm-two-weak-views"),
    ("Ada-CM, paper, its authors' 16,000 steps", "probes", "adacm", "probe-adacm-16000"),
]


def _row(result: dict[str, Any], results_dir: Path) -> list[str]:
    steps = run_step_log(results_dir, result)
    late = [s["loss_sup"] for s in steps if s["step"] > 0.5 * steps[-1]["step"]] if steps else []
    masks = [s["mask_rate"] for s in steps if "mask_rate" in s]
    last_thresholds = next((s["threshold"] for s in reversed(steps) if "threshold" in s), [])
    health = result_health(results_dir, result)
    metrics = result["metrics"]
    return [
        f"{metrics['top1']:.1f}",
        f"{metrics['mean_class_acc']:.1f}",
        f"{sum(late) / len(late):.2f}" if late else "–",
        f"{prior_entropy(result):.2f}",
        f"{100 * sum(masks) / len(masks):.0f}" if masks else "–",
        f"{min(last_thresholds):.2f}–{max(last_thresholds):.2f}" if last_thresholds else "–",
        ", ".join(health.flags) or "healthy",
        f"`{result['run_id']}`",
    ]


def main() -> None:
    """Print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--labels", default="10%")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = [
        "change (one at a time)",
        "top-1",
        "mean class acc",
        "labelled loss, 2nd half",
        "prior entropy",
        "mask %",
        "thresholds at the end",
        "health",
        "run",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    loaded: dict[str, list[dict[str, Any]]] = {}
    for label, folder, method, tag in ROWS:
        root = args.results_dir / folder if folder else args.results_dir
        if folder not in loaded:
            loaded[folder] = load_results(root) if root.is_dir() else []
        found = [
            r
            for r in loaded[folder]
            if r["method_label"] == method
            and (r.get("tag") or "") == tag
            and r["labels"] == args.labels
            and r["seed"] == args.seed
        ]
        cells = _row(found[0], root) if found else ["not run"] + ["–"] * (len(header) - 2)
        print("| " + " | ".join([label, *cells]) + " |")


if __name__ == "__main__":
    main()
