"""``bench run --wait``: follow submitted runs until every one has ended, with live progress."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness.interrupts import StopAborted
from harness.launchers import RunOutcome
from harness.launchers.scheduler import query_states
from harness.launchers.status import (
    RunStatus,
    StateQuery,
    count_states,
    grid_statuses,
    is_final,
)
from harness.spec import RunSpec
from harness.store import load_result, result_path

# A job that the scheduler does not know this long after following began has been lost
# (accounting off, another cluster): it counts as failed instead of being waited for forever.
UNKNOWN_GRACE_S = 120.0


def outcome_of(status: RunStatus, results_dir: Path, spec: RunSpec) -> RunOutcome:
    """A finished run as the CLI reports it: top-1 of a result, or where a failure is logged."""
    if status.state == "done":
        top1 = load_result(result_path(results_dir, spec))["metrics"]["top1"]
        return RunOutcome(spec.run_id, "done", f"top-1 {top1:.2f}% (job {status.job_id})")
    if status.stuck:
        return RunOutcome(spec.run_id, "failed", f"job {status.job_id} {status.detail}")
    if status.failure is not None:  # the failure record its worker wrote
        where = f"job {status.job_id}: " if status.job_id else ""
        return RunOutcome(
            spec.run_id,
            "failed",
            f"{where}{status.failure.error} (full error: {status.failure.traceback})",
        )
    last = status.error[-1] if status.error else "no error text in the log"
    reason = status.detail or "ended without a result"
    return RunOutcome(
        spec.run_id, "failed", f"job {status.job_id} {reason}; log {status.log_path}: {last}"
    )


def follow(
    specs: Sequence[RunSpec],
    results_dir: Path,
    console: Console,
    show_progress: bool,
    poll_s: float,
    query: StateQuery = query_states,
    unknown_grace_s: float = UNKNOWN_GRACE_S,
) -> list[RunOutcome]:
    """Poll the result store and the scheduler every ``poll_s`` seconds until every run of
    ``specs`` is done or failed, or pends for a reason that never clears (a failure: waiting
    would never end); print each change of state. Outcomes in ``specs`` order."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ended"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    try:
        statuses = _poll(specs, results_dir, progress, poll_s, query, unknown_grace_s)
    except KeyboardInterrupt:  # Ctrl-C while following: the jobs are SLURM's, they go on
        raise StopAborted(
            signal.SIGINT,
            "stopped following (Ctrl-C); the submitted jobs go on: `bench status` shows them, "
            "the same `bench run ... --wait` follows them again",
        ) from None
    return [outcome_of(s, results_dir, spec) for s, spec in zip(statuses, specs, strict=True)]


def _poll(
    specs: Sequence[RunSpec],
    results_dir: Path,
    progress: Progress,
    poll_s: float,
    query: StateQuery,
    unknown_grace_s: float,
) -> list[RunStatus]:
    """The loop of :func:`follow`: the statuses once every run has ended."""
    started = time.monotonic()
    seen: dict[str, str] = {}
    with progress:
        bar = progress.add_task("waiting", total=len(specs))
        while True:
            statuses = grid_statuses(specs, results_dir, query=query)
            lost = time.monotonic() - started > unknown_grace_s
            for s in statuses:
                label = f"{s.state} ({s.scheduler_state})" if s.scheduler_state else s.state
                label += f": {s.reason}" if s.reason and s.reason != "None" else ""
                if seen.get(s.run_id) != label:
                    seen[s.run_id] = label
                    progress.console.print(
                        f"{s.job_id or '':>10} {s.run_id}: {escape(label)}", highlight=False
                    )
            ended = [s for s in statuses if is_final(s) or (lost and s.state == "missing")]
            counts = count_states(statuses)
            progress.update(
                bar,
                completed=len(ended),
                description=", ".join(f"{n} {state}" for state, n in counts.items() if n),
            )
            if len(ended) == len(statuses):
                return statuses
            time.sleep(poll_s)
