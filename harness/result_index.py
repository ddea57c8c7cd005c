"""The results index (``<results>/runs/index.json``): what ``bench status`` shows of each
finished result and its health, kept beside the results so that 10,000 of them are read as file
stats instead of 160 MB of JSON and 10,000 step logs (:func:`harness.store.result_summaries`:
an entry is used while its result file and step logs keep their size and mtime)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from harness.health import result_health
from harness.spec import row_label
from harness.steplog import COPY_SUFFIX
from harness.store import LOG_NAME, RUNS_DIR, result_summaries

# Names what result_summary keeps: a change to it, or to the health rules, starts a new index.
INDEX_VERSION = "status+health/1"


def result_summary(results_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """What the index keeps of a finished result: its status columns and its health."""
    run_id = str(result.get("run_id", ""))
    return {
        "run_id": run_id,
        "dataset": result["dataset"],
        "method_label": row_label(result["method_label"], result.get("sweep")),
        "labels": result["labels"],
        "seed": result["seed"],
        "health": result_health(results_dir, result).as_dict() if run_id else None,
    }


def step_logs(path: str) -> list[str]:
    """The files a result's health is read from: its step log's compact copy beside it, and
    its full step log in ``runs/<run>/``."""
    folder, name = os.path.split(path)
    run_id = name[: -len(".json")]
    return [
        os.path.join(folder, run_id + COPY_SUFFIX),
        os.path.join(os.path.dirname(folder), RUNS_DIR, run_id, LOG_NAME),
    ]


def summaries(results_dir: Path) -> list[dict[str, Any]]:
    """:func:`result_summary` of every result, from the index where it is current."""
    summarise = functools.partial(result_summary, Path(results_dir))
    return result_summaries(Path(results_dir), summarise, INDEX_VERSION, also=step_logs)


def healths(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Each finished run's health (``Health.as_dict()``) by run id, from the index."""
    return {
        summary["run_id"]: summary["health"]
        for summary in summaries(results_dir)
        if summary["run_id"] and summary["health"] is not None
    }
