"""Helpers for tests that need a real SLURM cluster (brought up with `slurm/cluster.sh start`).

Tests call `require_slurm()` first: it skips them where no cluster runs, except in CI (CI=true),
where a missing cluster fails the test, because CI is meant to start one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable

import pytest
from submitit import Job

# sinfo %T states of a node that can run jobs ("idle*", "down", "drained", ... cannot).
USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
# sacct states after which a job never changes again.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)


def _run(cmd: list[str], timeout_s: float = 10.0) -> str | None:
    """stdout of `cmd`, or None when it is missing, fails or hangs (a dead slurmctld hangs)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def node_states() -> list[str]:
    """The state (sinfo %T) of every node, empty when SLURM is not installed or not answering."""
    if shutil.which("sinfo") is None:
        return []
    out = _run(["sinfo", "-h", "-o", "%T"])
    return out.split() if out else []


def slurm_available() -> bool:
    """True when sinfo and srun are on PATH and some node can take jobs."""
    if shutil.which("srun") is None:
        return False
    return any(state in USABLE_STATES for state in node_states())


def require_slurm() -> None:
    """Skip the calling test when no SLURM cluster runs; in CI (CI=true), fail it instead."""
    if slurm_available():
        return
    states = node_states()
    reason = (
        f"SLURM node state is {', '.join(states)}" if states else "no SLURM cluster is running"
    ) + " (start one with `slurm/cluster.sh start`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must bring the cluster up before the tests", pytrace=False)
    pytest.skip(reason)


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The accounting state of each job id ("12", "12_0", ...), from its latest record.

    Jobs that sacct does not know (yet) are left out. "CANCELLED by 0" reads "CANCELLED".
    """
    ids = list(job_ids)
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
    states: dict[str, str] = {}
    for line in (out or "").splitlines():
        job_id, _, state = line.partition("|")
        if job_id in ids and state:
            states[job_id] = state.split()[0]
    return states


def sacct_history(job_id: str) -> list[str]:
    """Every recorded state of one job, oldest first (a REQUEUED record per requeued run)."""
    out = _run(["sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State", "-j", job_id])
    rows = (line.partition("|") for line in (out or "").splitlines())
    return [state.split()[0] for jid, _, state in rows if jid == job_id and state]


def wait_for_jobs(jobs: Iterable[Job], timeout_s: float = 60.0) -> None:
    """Wait until every submitit job is done; fail the test (not hang) after `timeout_s`.

    `job.result()` alone waits forever for a job that never ends, e.g. stuck pending.
    """
    pending = list(jobs)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [job for job in pending if not job.done()]
        if pending and time.monotonic() > deadline:
            states = sacct_states(job.job_id for job in pending)
            pytest.fail(f"SLURM jobs not done after {timeout_s:.0f}s: {states}", pytrace=False)
        time.sleep(0.5)


def wait_for_final_states(job_ids: Iterable[str], timeout_s: float = 30.0) -> dict[str, str]:
    """Poll sacct until every job has a final state, or `timeout_s` passes; the last states seen.

    A job's result file appears before SLURM records its end, so right after `job.result()`
    sacct (and submitit's cached `job.state`) may still say RUNNING.
    """
    ids = list(job_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        states = sacct_states(ids)
        done = all(states.get(job_id) in FINAL_STATES for job_id in ids)
        if done or time.monotonic() > deadline:
            return states
        time.sleep(0.5)
