"""``results/runs/<run_id>/run.json``: what a run's working folder belongs to (dataset,
method, label setting, seed), written when the run is first claimed, so that ``bench status
--all`` can describe a run that is training or failed before it has a result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.spec import RunSpec, row_label
from harness.store import atomic_write_text

RUN_INFO_NAME = "run.json"
KEYS = ("dataset", "method_label", "labels", "seed")


def run_info(spec: RunSpec) -> dict[str, Any]:
    """The fields ``bench status`` shows of ``spec`` (the method as its leaderboard row)."""
    return {
        "dataset": spec.dataset,
        "method_label": row_label(spec.method_label, spec.sweep),
        "labels": spec.labels,
        "seed": spec.seed,
    }


def write_run_info(work_dir: Path, spec: RunSpec) -> None:
    """Store ``spec``'s :func:`run_info` in its working folder (once: it never changes)."""
    path = Path(work_dir) / RUN_INFO_NAME
    if not path.is_file():
        atomic_write_text(path, json.dumps({"run_id": spec.run_id, **run_info(spec)}) + "\n")


def read_run_info(work_dir: Path) -> dict[str, Any]:
    """The stored :func:`run_info` (only its known keys), or {} when there is none or it is
    unreadable (the status then shows the run id alone)."""
    try:
        data = json.loads((Path(work_dir) / RUN_INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return {key: data[key] for key in KEYS if isinstance(data, dict) and key in data}
