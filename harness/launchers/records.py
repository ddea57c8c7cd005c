"""``results/runs/<run_id>/slurm.json``: which SLURM job a run was last submitted as.

Written by the submitting ``bench run`` (atomically: many submitters and readers may share the
tree) and read by ``bench status`` and by later ``bench run`` calls, which ask the scheduler
about the recorded job before submitting the run again.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness.store import RUNS_DIR, atomic_write_text

RECORD_NAME = "slurm.json"


@dataclass(frozen=True)
class SlurmRecord:
    """One submitted run: what it is, which job runs it, where its logs go."""

    run_id: str
    dataset: str
    method_label: str
    labels: str
    seed: int
    job_id: str  # "123_4" for task 4 of array 123; "123" for a job outside an array
    array_job_id: str | None
    task_index: int | None
    stdout: str
    stderr: str
    submitted: str  # ISO 8601, UTC
    folder: str  # submitit's folder: the job's pickles and logs


def record_path(results_dir: Path, run_id: str) -> Path:
    """Where the record of ``run_id`` lives."""
    return Path(results_dir) / RUNS_DIR / run_id / RECORD_NAME


def write_record(results_dir: Path, record: SlurmRecord) -> Path:
    """Store ``record`` atomically (replacing the one of an earlier submission)."""
    path = record_path(results_dir, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(record), indent=1) + "\n")
    return path


def read_record(path: Path) -> SlurmRecord | None:
    """The record at ``path``; None when there is none, or (with a warning naming the file)
    when it is not one: a damaged record must not stop ``bench status``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in fields(SlurmRecord)}
        return SlurmRecord(**{k: v for k, v in data.items() if k in names})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as err:
        warnings.warn(f"ignoring {path}: not a SLURM job record ({err})", stacklevel=2)
        return None


def find_records(results_dir: Path) -> list[SlurmRecord]:
    """Every record under ``<results_dir>/runs/``, sorted by run id."""
    records = []
    for path in sorted((Path(results_dir) / RUNS_DIR).glob(f"*/{RECORD_NAME}")):
        record = read_record(path)
        if record is not None:
            records.append(record)
    return records
