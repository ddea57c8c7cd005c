"""The result store: one JSON per run under ``<results>/<dataset>/<run_id>.json``, written
atomically; per-run working state (checkpoint, step log) under ``<results>/runs/<run_id>/``.

Finished results are never lost: rewriting one needs ``force``, and even then the old file is
moved under ``runs/<run_id>/superseded/`` first. Many processes (SLURM tasks on many nodes) can
write different results into one tree at once.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import BenchError
from harness.spec import RunSpec

RUNS_DIR = "runs"


def result_path(results_dir: Path, spec: RunSpec) -> Path:
    """Where the result of ``spec`` lives."""
    return Path(results_dir) / spec.dataset / f"{spec.run_id}.json"


def run_dir(results_dir: Path, spec: RunSpec) -> Path:
    """The run's working folder (checkpoint, step log); git-ignored."""
    return Path(results_dir) / RUNS_DIR / spec.run_id


def has_result(results_dir: Path, spec: RunSpec) -> bool:
    """Whether ``spec`` has finished (its result file exists)."""
    return result_path(results_dir, spec).is_file()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(path: Path, result: dict[str, Any], *, force: bool = False) -> None:
    """Store one result; an existing one is an error unless ``force`` (then it is archived)."""
    if path.exists():
        if not force:
            raise BenchError(f"{path} exists; pass --force to rerun (the old result is kept)")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        archive = path.parents[1] / RUNS_DIR / path.stem / "superseded" / f"{stamp}.json"
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, archive)
    atomic_write_text(path, json.dumps(result, indent=1, sort_keys=False) + "\n")


def load_result(path: Path) -> dict[str, Any]:
    """Read one result file."""
    return json.loads(Path(path).read_text())


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result under ``results_dir`` (not the working folders), sorted by path.

    A file that is not a result is skipped with a warning naming it.
    """
    results = []
    root = Path(results_dir)
    for path in sorted(root.glob("*/*.json")):
        if path.parts[-2] == RUNS_DIR or path.name.startswith("."):
            continue
        try:
            result = load_result(path)
        except (OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: not valid JSON ({err})", stacklevel=2)
            continue
        if not isinstance(result, dict) or "metrics" not in result or "method_label" not in result:
            warnings.warn(f"skipping {path}: not a fer-bench result", stacklevel=2)
            continue
        results.append(result)
    return results
