"""Cross-dataset results: where they live, which finished runs ``bench eval`` evaluates, and
the table the leaderboard shows (light imports only: the leaderboard reads this).

A cross-dataset result is ``<results>/<train set>/cross/<run_id>__on_<test set>.json``: beside
the run's own result (``<results>/<train set>/<run_id>.json``), never in its place, and one
folder deeper, so nothing that reads training results mistakes it for one. It is written once;
``--force`` replaces it and keeps the old one under ``<results>/runs/<run_id>/superseded/``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from harness.store import RUNS_DIR, SUPERSEDED_DIR, load_result, load_results, read_json_files

CROSS_DIR = "cross"
METRICS = ("top1", "mean_class_acc", "macro_f1")


def cross_result_path(results_dir: Path, train_dataset: str, run_id: str, test: str) -> Path:
    """``<results_dir>/<train_dataset>/cross/<run_id>__on_<test>.json``."""
    return Path(results_dir) / train_dataset / CROSS_DIR / f"{run_id}__on_{test}.json"


def cross_archive_path(results_dir: Path, run_id: str, test: str) -> Path:
    """Where a replaced cross-dataset result is kept:
    ``<results_dir>/runs/<run_id>/superseded/<UTC timestamp>__on_<test>.json``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return Path(results_dir) / RUNS_DIR / run_id / SUPERSEDED_DIR / f"{stamp}__on_{test}.json"


def _run_by_id(results_dir: Path, run_id: str) -> dict[str, Any]:
    """The finished result of one run id, found in any dataset folder."""
    found = [
        path for path in Path(results_dir).glob(f"*/{run_id}.json") if path.parent.name != RUNS_DIR
    ]
    if not found:
        raise ConfigError(f"--runs {run_id}: no finished run with this id in {results_dir}/")
    return load_result(found[0])


def select_runs(
    results_dir: Path,
    *,
    run_ids: str | None,
    methods: str | None,
    labels: str,
    seeds: str,
    dataset: str,
    tag: str | None = None,
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The finished results ``bench eval`` may evaluate, per grid cell: (the cell's name, the
    results that match it), in the grid's order; a cell without any is listed empty.

    Either ``run_ids`` (comma list: each id its own cell) or a grid as ``bench run`` names it
    (methods × labels × seeds on ``dataset``, and only results tagged ``tag`` when given). A
    cell matches every finished result with that method variant, label setting and seed
    (and tag), whatever its other settings: the caller chooses among them.
    """
    if bool(run_ids) == bool(methods):
        raise ConfigError("bench eval needs either --runs ID,... or the grid's --methods ...")
    if run_ids:
        ids = [item.strip() for item in run_ids.split(",") if item.strip()]
        return [(run_id, [_run_by_id(results_dir, run_id)]) for run_id in ids]
    # Imported here: the plan parsers pull in Hydra and the method registry.
    from harness.labels import parse_protocols
    from harness.plan import parse_methods, parse_seeds
    from harness.result_filter import ResultFilter

    variants = [v.label for v in parse_methods(methods or "")]
    settings = list(dict.fromkeys(p.text for p in parse_protocols(labels)))
    seed_list = parse_seeds(seeds)
    where = ResultFilter.parse(tag=tag, dataset=dataset)
    finished = where.apply(load_results(results_dir))
    cells = []
    for variant in variants:
        for setting in settings:
            for seed in seed_list:
                key = (variant, setting, seed)
                matching = [
                    r for r in finished if (r["method_label"], r["labels"], r["seed"]) == key
                ]
                tagged = f" [tag {tag}]" if tag else ""
                cells.append((f"{variant} at {setting}, seed {seed}{tagged}", matching))
    return cells


def load_cross_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every cross-dataset result under ``<results_dir>/*/cross/``, sorted by path; a file
    that is not one is skipped with a warning naming it."""
    paths = (
        path
        for path in sorted(Path(results_dir).glob(f"*/{CROSS_DIR}/*.json"))
        if not path.name.startswith(".")
    )
    return list(read_json_files(paths, _cross_problem, "a cross-dataset result"))


def _cross_problem(result: Any) -> str | None:
    """Why ``result`` is not a cross-dataset result (``bench eval``'s), or None if it is one."""
    if not isinstance(result, dict) or result.get("kind") != "cross_dataset":
        return "no kind: cross_dataset"
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def cross_frame(cross_results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (run, test set) and one per run for its own test set (``in_domain``
    true), with the three metrics: train_dataset, tag, method, method_label, labels, seed,
    run_id, test_dataset, in_domain, top1, mean_class_acc, macro_f1."""
    rows: list[dict[str, Any]] = []
    seen_runs: set[str] = set()
    for result in cross_results:
        base = {
            "train_dataset": result["train_dataset"],
            "tag": result.get("tag") or "",
            "method": result["method"],
            "method_label": result["method_label"],
            "labels": result["labels"],
            "seed": result["seed"],
            "run_id": result["run_id"],
        }
        metrics = result.get("metrics") or {}
        rows.append(
            {
                **base,
                "test_dataset": result["test_dataset"],
                "in_domain": False,
                **{m: _number(metrics.get(m)) for m in METRICS},
            }
        )
        if result["run_id"] not in seen_runs:
            seen_runs.add(result["run_id"])
            own = result.get("in_domain") or {}
            rows.append(
                {
                    **base,
                    "test_dataset": result["train_dataset"],
                    "in_domain": True,
                    **{m: _number(own.get(m)) for m in METRICS},
                }
            )
    columns = [
        "train_dataset",
        "tag",
        "method",
        "method_label",
        "labels",
        "seed",
        "run_id",
        "test_dataset",
        "in_domain",
        *METRICS,
    ]
    return pd.DataFrame(rows, columns=columns)
