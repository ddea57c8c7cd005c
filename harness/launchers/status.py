"""The state of each run of a grid: done / running / pending / failed / missing.

The result store says what is done; for the rest, the run's SLURM record (if it was submitted)
and the scheduler say whether it is still queued or running, or failed. ``bench run`` submits
only the missing and failed runs; ``bench status`` shows them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.failure import FAILED_NAME, FailureRecord, read_failure
from harness.health import Health, short, stored_health
from harness.launchers.records import SlurmRecord, find_records, read_record, record_path
from harness.launchers.scheduler import (
    FINAL_STATES,
    PENDING_STATES,
    RUNNING_STATES,
    never_clears,
    query_reasons,
    query_states,
)
from harness.result_index import summaries
from harness.run_info import read_run_info, run_info
from harness.spec import RunSpec
from harness.steplog import last_step as last_logged_step
from harness.store import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    LOG_NAME,
    RUNS_DIR,
    LockHolder,
    has_result,
    lock_holder,
)
from harness.tables import how_many, is_plain, print_table, rich_table

STATES = ("done", "running", "pending", "failed", "missing")
COLOURS = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "red"}
ERROR_LINES = 8
COLUMNS = ("run", "method", "labels", "seed", "state", "job", "step", "detail")
# Enough of a log's end to hold a traceback's last lines, without reading a huge log.
_TAIL_BYTES = 64 * 1024

StateQuery = Callable[[Iterable[str]], dict[str, str]]


@dataclass(frozen=True)
class RunStatus:
    """Where one run stands, with what is known about it."""

    run_id: str
    state: str  # one of STATES
    dataset: str = ""
    method_label: str = ""
    labels: str = ""
    seed: int | None = None
    job_id: str | None = None
    scheduler_state: str | None = None
    step: int | None = None  # the last training step in the run's log
    log_path: str | None = None  # the job's stderr (SLURM runs)
    error: tuple[str, ...] = ()  # the last lines of that log (failed runs)
    detail: str = ""
    reason: str | None = None  # SLURM's reason a pending job waits (Resources, PartitionConfig)
    holder: str | None = None  # the process training it, "pid 123 on node7" (running runs)
    failure: FailureRecord | None = None  # the failure record its last attempt left (failed)

    @property
    def stuck(self) -> bool:
        """Pending for a reason that never clears by itself (it will never start)."""
        return self.state == "pending" and never_clears(self.reason)

    @property
    def live(self) -> bool:
        """Queued or running: submitting it again would run it twice."""
        return self.state in ("pending", "running")


def classify(
    done: bool,
    record: SlurmRecord | None,
    scheduler_state: str | None,
    holder: LockHolder | None = None,
    failure: FailureRecord | None = None,
) -> str:
    """A run's state from the store (``done``), its SLURM record and the scheduler's word, and
    from its working folder: the process holding its lock (``holder``) and the failure record
    its last attempt left (``failure``).

    The scheduler's word comes first for a submitted run. A job that completed while its
    result is gone counts as missing (the result was deleted: run it again). Without a word
    from the scheduler (a local run, or a job it no longer knows), a live lock holder means
    running, a failure record failed, and nothing missing.
    """
    if done:
        return "done"
    if record is not None and scheduler_state is not None:
        if scheduler_state in PENDING_STATES:
            return "pending"
        if scheduler_state in RUNNING_STATES:
            return "running"
        if scheduler_state == "COMPLETED":
            return "missing"
        return "failed"
    if holder is not None:
        return "running"
    if failure is not None:
        return "failed"
    return "missing"


def tail_lines(path: str | Path | None, count: int = ERROR_LINES) -> tuple[str, ...]:
    """The last ``count`` non-blank lines of a text file (empty when it cannot be read)."""
    if path is None:
        return ()
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ()
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return tuple(lines[-count:])


def last_step(run_dir: Path) -> int | None:
    """The last training step logged in ``<run_dir>/metrics.jsonl`` (None before the first)."""
    return last_logged_step(run_dir / LOG_NAME)


def stuck_detail(job_id: str | None, reason: str) -> str:
    """What to say of a job that waits for ``reason`` and never will start."""
    return (
        f"PENDING ({reason}): SLURM will never start it, the request exceeds what the "
        f"partition, QOS or account allows; cancel it (scancel {job_id}) and submit a request "
        "they can satisfy"
    )


def _status(
    run_id: str,
    results_dir: Path,
    done: bool,
    record: SlurmRecord | None,
    scheduler_state: str | None,
    meta: dict[str, Any],
    reason: str | None = None,
) -> RunStatus:
    work_dir = Path(results_dir) / RUNS_DIR / run_id
    holder = failure = None
    if not done:
        holder = lock_holder(work_dir)
        failure = None if holder else read_failure(work_dir)
    state = classify(done, record, scheduler_state, holder, failure)
    step = None if state == "done" else last_step(work_dir)
    if state == "failed" and failure is not None and failure.step is not None:
        step = failure.step
    detail = _detail(state, record, scheduler_state, reason, holder, failure)
    health = None
    if state == "done" and isinstance(meta.get("health"), dict):  # from the results index
        health = Health(tuple(meta["health"]["flags"]), tuple(meta["health"]["reasons"]))
    elif state == "done":
        health = stored_health(results_dir, meta.get("dataset", ""), run_id)
    if health is not None:
        detail = short(health)  # docs/health.md: the ways a finished run can have failed
    if state == "missing" and (work_dir / CHECKPOINT_NAME).exists():
        detail = f"{detail}; resumes from its checkpoint".lstrip("; ")
    error: tuple[str, ...] = ()
    if state == "failed" and record is not None:
        error = tail_lines(record.stderr)
    return RunStatus(
        run_id=run_id,
        state=state,
        job_id=record.job_id if record else None,
        scheduler_state=scheduler_state,
        step=step,
        log_path=record.stderr if record else None,
        error=error,
        detail=detail,
        reason=reason if state == "pending" else None,
        holder=str(holder) if holder and state == "running" else None,
        failure=failure if state == "failed" else None,
        **{key: value for key, value in meta.items() if key != "health"},
    )


def _detail(
    state: str,
    record: SlurmRecord | None,
    scheduler_state: str | None,
    reason: str | None,
    holder: LockHolder | None,
    failure: FailureRecord | None,
) -> str:
    """The status table's last column: what else is known of the run in its state."""
    if state == "missing" and record is not None:
        return "completed, result gone" if scheduler_state else "unknown to the scheduler"
    if state == "pending" and never_clears(reason):
        return stuck_detail(record.job_id if record else None, str(reason))
    if state == "pending" and reason and reason != "None":
        return f"{scheduler_state} ({reason})"
    words = [scheduler_state] if scheduler_state and state in STATES[1:4] else []
    if state == "running" and holder is not None:
        words.append(str(holder))
    if state == "failed" and failure is not None:
        words.append(failure.error)
    return ": ".join(words)


def _scheduler_states(records: Iterable[SlurmRecord | None], query: StateQuery) -> dict[str, str]:
    job_ids = [r.job_id for r in records if r is not None]
    return query(job_ids) if job_ids else {}


def _pending_reasons(
    states: dict[str, str], query: StateQuery, reasons: StateQuery | None
) -> dict[str, str]:
    """SLURM's reasons for the pending jobs among ``states``. Asked of the scheduler only with
    the real state query: a test's made-up job ids must not meet real jobs."""
    if reasons is None:
        reasons = query_reasons if query is query_states else None
    pending = [job for job, state in states.items() if state in PENDING_STATES]
    return reasons(pending) if reasons is not None and pending else {}


def grid_statuses(
    specs: Sequence[RunSpec],
    results_dir: Path,
    query: StateQuery = query_states,
    reasons: StateQuery | None = None,
) -> list[RunStatus]:
    """The status of every run of a grid, in the grid's order.

    The scheduler is asked (once, for all runs) only about runs without a result that carry a
    SLURM record, so a grid that never saw SLURM needs no SLURM commands.
    """
    done = {s.run_id: has_result(results_dir, s) for s in specs}
    records = {s.run_id: read_record(record_path(results_dir, s.run_id)) for s in specs}
    states = _scheduler_states((r for r in records.values() if r and not done[r.run_id]), query)
    why = _pending_reasons(states, query, reasons)
    statuses = []
    for spec in specs:
        record = records[spec.run_id]
        meta = run_info(spec)
        scheduler_state = states.get(record.job_id) if record else None
        reason = why.get(record.job_id) if record else None
        statuses.append(
            _status(
                spec.run_id, results_dir, done[spec.run_id], record, scheduler_state, meta, reason
            )
        )
    return statuses


def all_statuses(
    results_dir: Path, query: StateQuery = query_states, reasons: StateQuery | None = None
) -> list[RunStatus]:
    """The status of every run the results tree knows: finished results, submitted runs and
    runs with a working folder (e.g. interrupted local runs), sorted by dataset and run id."""
    results_dir = Path(results_dir)
    metas: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    for meta in summaries(results_dir):  # the results index: stats, not 10,000 JSON files
        if meta["run_id"]:
            done.add(meta["run_id"])
            metas[meta["run_id"]] = {k: v for k, v in meta.items() if k != "run_id"}
    records = {r.run_id: r for r in find_records(results_dir)}
    for record in records.values():
        metas.setdefault(
            record.run_id,
            {
                "dataset": record.dataset,
                "method_label": record.method_label,
                "labels": record.labels,
                "seed": record.seed,
            },
        )
    for work_dir in _unfinished_work_dirs(results_dir / RUNS_DIR, done):
        # Interrupted, training or failed: described by the run.json its worker wrote.
        metas.setdefault(work_dir.name, read_run_info(work_dir))
    states = _scheduler_states((r for r in records.values() if r.run_id not in done), query)
    why = _pending_reasons(states, query, reasons)
    statuses = []
    for run_id, meta in metas.items():
        record = records.get(run_id)
        scheduler_state = states.get(record.job_id) if record else None
        reason = why.get(record.job_id) if record else None
        statuses.append(
            _status(run_id, results_dir, run_id in done, record, scheduler_state, meta, reason)
        )
    return sorted(statuses, key=lambda s: (s.dataset, s.run_id))


# What a working folder of a run without a result holds when the run is worth listing.
_WORK_FILES = (CHECKPOINT_NAME, LOCK_NAME, FAILED_NAME)


def _unfinished_work_dirs(runs_root: Path, done: set[str]) -> list[Path]:
    """The working folders of runs without a result that hold a checkpoint, a lock or a
    failure record (finished runs' folders are not even listed: 10,000 of them cost time)."""
    try:
        entries = [e for e in os.scandir(runs_root) if e.name not in done and e.is_dir()]
    except OSError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if any(os.path.exists(os.path.join(e.path, name)) for name in _WORK_FILES)
    )


def needs_launch(status: RunStatus, force: bool = False) -> bool:
    """Whether ``bench run`` should (re)submit the run: it is missing or failed, or done and
    ``force`` is given. A queued or running job is never submitted twice."""
    return status.state in ("missing", "failed") or (force and status.state == "done")


def is_final(status: RunStatus) -> bool:
    """Whether the run will not change any more without a new submission (or a cancellation:
    a job pending for a reason that never clears)."""
    if status.state in ("done", "failed") or status.stuck:
        return True
    return status.state == "missing" and status.scheduler_state in FINAL_STATES


def count_states(statuses: Iterable[RunStatus]) -> dict[str, int]:
    """How many runs are in each state (every state present, in STATES order)."""
    counts = dict.fromkeys(STATES, 0)
    for status in statuses:
        counts[status.state] += 1
    return counts


def _title(statuses: Sequence[RunStatus]) -> str:
    counts = count_states(statuses)
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return f"{how_many(len(statuses), 'run')}: {summary or 'none'}"


def _cells(s: RunStatus) -> list[str]:
    """One run's row, in :data:`COLUMNS` order (plain text)."""
    seed = "" if s.seed is None else str(s.seed)
    step = "" if s.step is None else str(s.step)
    return [s.run_id, s.method_label, s.labels, seed, s.state, s.job_id or "", step, s.detail]


def status_table(statuses: Sequence[RunStatus], title: str | None = None) -> Table:
    """A rich table of runs: id, method, labels, seed, state, job and what else is known."""
    table = rich_table(title or _title(statuses), COLUMNS, [])
    for s in statuses:
        cells = [escape(cell) for cell in _cells(s)]
        cells[4] = f"[{COLOURS.get(s.state, 'white')}]{s.state}[/]"
        table.add_row(*cells)
    return table


def print_statuses(console: Console, statuses: Sequence[RunStatus]) -> None:
    """The status table, coloured on a terminal; as plain aligned text past
    :data:`~harness.tables.RICH_ROWS` runs or off a terminal (ids whole, never folded)."""
    if is_plain(console, len(statuses)):
        print_table(console, _title(statuses), COLUMNS, [_cells(s) for s in statuses])
    else:
        console.print(status_table(statuses))


def print_failures(console: Console, statuses: Sequence[RunStatus]) -> None:
    """For each failed run: its error's line and where the whole error is (the failure
    record its worker wrote), and for a SLURM job its log's path and last lines."""
    for s in statuses:
        if s.state != "failed":
            continue
        where = f"job {s.job_id}, {s.scheduler_state}" if s.job_id else "local run"
        at = f" at step {s.step}" if s.step is not None else ""
        console.print(
            f"[red]failed[/] {s.run_id} ({escape(where)}){at}", highlight=False, soft_wrap=True
        )
        if s.failure is not None:
            console.print(f"  error: {escape(s.failure.error)}", highlight=False, soft_wrap=True)
            console.print(f"  full error: {s.failure.traceback}", highlight=False, soft_wrap=True)
        if s.log_path is None:
            continue
        console.print(f"  log: {s.log_path}", highlight=False, soft_wrap=True)
        for line in s.error or ("(the log is empty or unreadable)",):
            console.print(f"  | {escape(line)}", highlight=False, soft_wrap=True)
