"""``results/runs/<run_id>/failed.json``: why a run's last attempt failed.

The worker writes it when training raises (locally, in a worker process or on a SLURM node
alike), with the error's full text beside it in ``failed.txt``; ``bench status`` reads it to
show the run as ``failed`` with the error's one line and where the whole error is. A new
attempt clears both files when it claims the run, so a record always belongs to the last
attempt. Written atomically (readers on other nodes see the whole record or none).
"""

from __future__ import annotations

import json
import os
import socket
import traceback
import warnings
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import BenchError
from harness.store import atomic_write_text

FAILED_NAME = "failed.json"
TRACEBACK_NAME = "failed.txt"


@dataclass(frozen=True)
class FailureRecord:
    """How a run's last attempt ended in an error."""

    run_id: str
    error: str  # one line: a BenchError's message, else "TypeName: message"
    step: int | None  # the step it failed at (or the last step logged before), None before any
    traceback: str  # the file holding the whole error (the traceback of a bug)
    time: str  # ISO 8601, UTC
    host: str
    pid: int


def error_line(error: BaseException) -> str:
    """The error in one line: a :class:`BenchError`'s message is written for the user as it
    is; anything else (a bug) is named by its type."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, BenchError):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def write_failure(
    work_dir: Path, run_id: str, error: BaseException, step: int | None
) -> FailureRecord:
    """Record that the run in ``work_dir`` failed with ``error`` (to be called from its
    ``except`` block: the traceback written is the one being handled)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    full = work_dir / TRACEBACK_NAME
    atomic_write_text(full, "".join(traceback.format_exception(error)))
    record = FailureRecord(
        run_id=run_id,
        error=error_line(error),
        step=step,
        traceback=str(full),
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    atomic_write_text(work_dir / FAILED_NAME, json.dumps(asdict(record), indent=1) + "\n")
    return record


def read_failure(work_dir: Path) -> FailureRecord | None:
    """The failure record in ``work_dir``; None when there is none, or (with a warning naming
    the file) when it is damaged: one bad file must not stop ``bench status``."""
    path = Path(work_dir) / FAILED_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.warn(f"ignoring {path}: not a failure record ({err})", stacklevel=2)
        return None
    try:
        names = {f.name for f in fields(FailureRecord)}
        return FailureRecord(**{k: v for k, v in data.items() if k in names})
    except (TypeError, AttributeError) as err:
        warnings.warn(f"ignoring {path}: not a failure record ({err})", stacklevel=2)
        return None


def clear_failure(work_dir: Path) -> None:
    """Forget an earlier attempt's failure (a new attempt has claimed the run)."""
    for name in (FAILED_NAME, TRACEBACK_NAME):
        (Path(work_dir) / name).unlink(missing_ok=True)
