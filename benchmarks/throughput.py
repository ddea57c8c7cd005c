"""This repository's page of training-throughput figures, docs/performance.md.

    python benchmarks/throughput.py --device cpu --threads 1
    python benchmarks/throughput.py --device cuda          # what scripts/gpu_check.sh runs
    python benchmarks/throughput.py --render-only          # the page again from the JSON kept

Measures as ``bench speed`` does (:mod:`harness.throughput`, every flag of it applies), writes
docs/performance/throughput-<cpu|cuda>.json and regenerates docs/performance.md from every such
file present, so a GPU run adds its section beside the CPU one. The page states the goals of
issue 13 and compares the data path with the per-sample augmentation path it replaced
(``--save-baseline`` kept those CPU figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.errors import BenchError, ConfigError
from harness.throughput import describe, figures_table, measurement_parser, run, write_record

# Relative to the working directory: run from the checkout's root.
DOC = Path("docs/performance.md")
FIGURES = Path("docs/performance")

# The CPU figures measured on the per-sample augmentation path (before it was batched), kept
# beside the current ones: the data path's speed-up is measured against them.
BASELINE_NAME = "per-sample-baseline-cpu.json"
GOAL_ENGINE_VS_BARE = 0.9  # engine step ≥ 0.9× the bare model step (CPU fer_cnn; GPU 224 px)
GOAL_DATA_SPEED_UP = 10.0  # data path at 112 px ≥ 10× the per-sample rate per core (CPU)
SPEED_UP_HEADER = "data vs per-sample (load-adjusted)"


def per_core_rates(record: dict[str, Any] | None) -> dict[int, float]:
    """Data path's unlabelled samples/s per core, by image size, of a CPU record."""
    if record is None:
        return {}
    return {c["image_size"]: c["unlabelled_per_s"] / record["threads"] for c in record["cases"]}


def data_speed_up(
    now: dict[str, Any] | None, before: dict[str, Any] | None, size: int
) -> tuple[float, float | None] | None:
    """``(raw, load-adjusted)`` speed-up of the data path at ``size`` px between two CPU
    records; None when either lacks that size, and no adjusted figure without a bare fer_cnn
    step in both.

    Runs made at different times on a shared machine see different loads (the 2-core
    development machine under a load average of 8 ran every part ~5× slower than under 3), so
    the adjusted figure divides each run's rate by the speed of its own bare fer_cnn step,
    timed in the same interleaved rounds: what remains is the data path's own change.
    """
    rate_now, rate_before = per_core_rates(now).get(size), per_core_rates(before).get(size)
    if rate_now is None or rate_before is None:
        return None
    raw = rate_now / rate_before
    ref_now, ref_before = _bare_seconds(now), _bare_seconds(before)
    adjusted = raw * ref_now / ref_before if ref_now and ref_before else None
    return raw, adjusted


def _bare_seconds(record: dict[str, Any] | None) -> float | None:
    case = _case(record, "fer_cnn-48")
    return None if case is None else case["seconds"].get("bare")


def goals(records: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> list[list[str]]:
    """Rows ``[goal, measured, verdict]`` for the three goals of issue 13."""
    cpu, gpu = records.get("cpu"), records.get("cuda")
    rows = [
        _ratio_goal(
            "CPU, fer_cnn 48 px, μ=1, num_workers=0: engine step ≥ 0.9× bare model step",
            cpu,
            "fer_cnn-48",
        )
    ]
    label = "CPU: data path at 112 px ≥ 10× the per-sample path's rate per core"
    speed_up = data_speed_up(cpu, baseline, 112)
    if speed_up is None:
        rows.append([label, "not measured", "—"])
    elif cpu == baseline:
        rows.append([label, "the baseline is today's data path", "awaits batched augmentation"])
    else:
        raw, adjusted = speed_up
        factor = raw if adjusted is None else adjusted
        measured = f"{raw:.2f}× raw" + (
            "" if adjusted is None else f", {adjusted:.2f}× load-adjusted"
        )
        verdict = (
            "met"
            if factor >= GOAL_DATA_SPEED_UP
            else f"missed ({GOAL_DATA_SPEED_UP / factor:.1f}× short)"
        )
        rows.append([label, measured, verdict])
    rows.append(
        _ratio_goal(
            "GPU, resnet18 224 px, μ=7: engine step ≥ 0.9× bare model step", gpu, "resnet18-224"
        )
    )
    return rows


def _case(record: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if record is None:
        return None
    return next((c for c in record["cases"] if c["key"] == key), None)


def _ratio_goal(label: str, record: dict[str, Any] | None, key: str) -> list[str]:
    case = _case(record, key)
    if case is None or "engine_vs_bare" not in case:
        return [label, "not measured", "still to come" if record is None else "—"]
    ratio = case["engine_vs_bare"]
    verdict = (
        "met" if ratio >= GOAL_ENGINE_VS_BARE else f"missed by {GOAL_ENGINE_VS_BARE - ratio:.2f}"
    )
    return [label, f"{ratio:.2f}×", verdict]


def page_table(record: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The figures table of ``bench speed`` with, on a CPU, the data path's speed-up over
    ``baseline``'s per-sample path (raw, and adjusted for the machine's load)."""
    per_core = record["kind"] == "cpu"
    cells = [
        _speed_up_cell(data_speed_up(record, baseline, c["image_size"]) if per_core else None)
        for c in record["cases"]
    ]
    return figures_table(record, {SPEED_UP_HEADER: cells})


def _speed_up_cell(speed_up: tuple[float, float | None] | None) -> str:
    if speed_up is None:
        return "—"
    raw, adjusted = speed_up
    return f"{raw:.2f}×" + ("" if adjusted is None else f" ({adjusted:.2f}×)")


TITLES = {"cpu": "CPU", "cuda": "GPU"}
INTRO = (
    "Each case is a FixMatch step (labelled batch 64 and μ unlabelled images per labelled one, "
    "each unlabelled image in a weak and a strong view), timed in one process in three parts: "
    "**bare**, forward, backward and optimiser step of the same model on a random batch of the "
    "student's shape; **data**, the engine's data path alone (`harness.engine.next_batches`: "
    "the next batch of every stream, augmented, as model input on the device); **engine**, "
    "one step as `fit` runs it (`harness.engine.training_step`: data path, loss, backward, "
    "optimiser, schedule, EMA). Figures are median milliseconds per step over rounds that "
    "interleave the three parts; on CUDA under bf16 autocast and channels_last. *engine/bare* "
    "is the engine's throughput over the bare step's; *data vs per-sample* compares the data "
    "path's rate per core with the per-sample augmentation it replaces (the baseline section): "
    "raw, and in brackets adjusted for the machine's load, each run's rate divided by the "
    "speed of its own bare fer_cnn step (the two runs are made at different times, and on a "
    "shared machine a load change alone moves raw rates several-fold)."
)


def render(records: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    """``docs/performance.md`` from the figures of each device kind measured so far."""
    parts = [
        "# Training throughput",
        "Generated by `benchmarks/throughput.py` from "
        "`docs/performance/*.json`: do not edit, rerun. CPU: `python benchmarks/throughput.py "
        "--device cpu --threads 1`; GPU: `bash scripts/gpu_check.sh` (the GPU tests, then "
        "this benchmark on CUDA).",
        INTRO,
        "## Goals (issue 13)",
        tabulate(goals(records, baseline), ["goal", "measured", "verdict"], tablefmt="github"),
    ]
    for kind in ("cpu", "cuda"):
        parts.append(f"## {TITLES[kind]}")
        if kind in records:
            parts += [describe(records[kind]), page_table(records[kind], baseline)]
        else:
            parts.append(
                "Still to come: no GPU was available when this page was generated. Run "
                "`bash scripts/gpu_check.sh` on a GPU node; it writes "
                "`docs/performance/throughput-cuda.json` and regenerates this page."
            )
    if baseline is not None:
        parts += [
            "## Baseline: the per-sample augmentation path (CPU)",
            "Each sample augmented on its own (torchvision v2 under its own seeded RNG), as "
            "before batched augmentation; the data path's speed-up is measured against this.",
            describe(baseline),
            page_table(baseline),
        ]
    return "\n\n".join(parts) + "\n"


def load_figures(figures_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Every ``throughput-<kind>.json`` in ``figures_dir`` by kind, and the baseline if kept."""
    records = {
        path.stem.removeprefix("throughput-"): json.loads(path.read_text())
        for path in sorted(figures_dir.glob("throughput-*.json"))
    }
    baseline_path = figures_dir / BASELINE_NAME
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else None
    return records, baseline


def main(argv: Sequence[str] | None = None, prog: str = "python benchmarks/throughput.py") -> int:
    """Measure (unless ``--render-only``), print the figures, write this kind's JSON and
    regenerate the page."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = measurement_parser(prog, __doc__.split("\n\n")[0])
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help=f"also keep these CPU figures as {BASELINE_NAME}, the data path's reference",
    )
    parser.add_argument("--figures-dir", type=Path, default=FIGURES)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument(
        "--render-only", action="store_true", help="regenerate the page without measuring"
    )
    args = parser.parse_args(argv)
    try:
        if not args.render_only:
            _measure_and_write(args, [*prog.split(), *argv])
        args.doc.write_text(render(*load_figures(args.figures_dir)))
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.doc}")
    return 0


def _measure_and_write(args: argparse.Namespace, command: Sequence[str]) -> None:
    """Measure, print the figures and write this kind's JSON (and the baseline when asked)."""
    record = run(args, command)
    if args.save_baseline and record["kind"] != "cpu":
        raise ConfigError("--save-baseline keeps CPU figures: run it with --device cpu")
    print(describe(record) + "\n\n" + figures_table(record))
    args.figures_dir.mkdir(parents=True, exist_ok=True)
    names = [f"throughput-{record['kind']}.json"] + ([BASELINE_NAME] if args.save_baseline else [])
    for name in names:
        write_record(record, args.figures_dir / name)
    print(f"\nwrote {', '.join(str(args.figures_dir / n) for n in names)}")


if __name__ == "__main__":
    sys.exit(main())
