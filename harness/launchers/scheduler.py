"""What SLURM says about jobs: ``squeue`` for live ones, ``sacct`` (accounting) for the rest.

The parsers are pure functions of the commands' text; :func:`query_states` runs them. A job
that neither command knows (purged, another cluster, no SLURM on this machine) is left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

# The states a job passes through before it runs, or returns to when it is requeued.
PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "CONFIGURING"}
)
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED", "STOPPED"}
)
# Final states other than COMPLETED: the job ended without finishing its work.
FAILED_STATES = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)
FINAL_STATES = FAILED_STATES | {"COMPLETED"}

# SLURM's reasons for a pending job that no amount of waiting clears: the request exceeds what
# the partition, the QOS or the account allows per job, or names what does not exist.
NEVER_CLEARING_REASONS = frozenset(
    {
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "DependencyNeverSatisfied",
    }
)
_PER_JOB_LIMIT = re.compile(r"^(?:QOS|Assoc)(?:Max\w*PerJob|Min)\w*$")

_ARRAY_RANGE = re.compile(r"^(?P<job>\d+)_\[(?P<tasks>[^\]]+)\]$")
COMMAND_TIMEOUT_S = 30


def base_job_id(job_id: str) -> str:
    """``123_4`` → ``123`` (the array's id); ``123`` → ``123``."""
    return job_id.split("_", 1)[0]


def expand_job_id(job_id: str) -> list[str]:
    """``12_[0-2,5%2]`` (a pending array's tasks, as SLURM prints them) → ``12_0 12_1 12_2
    12_5``; any other id is returned as it is."""
    match = _ARRAY_RANGE.match(job_id)
    if match is None:
        return [job_id]
    tasks = match["tasks"].split("%", 1)[0]  # "%2" is the array's parallelism limit
    ids = []
    for part in tasks.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return [job_id]
        ids.extend(f"{match['job']}_{task}" for task in range(int(first), int(last or first) + 1))
    return ids


def parse_states(text: str) -> dict[str, str]:
    """Read ``JOBID|STATE`` lines (``squeue -o '%i|%T'`` or ``sacct -P -o JobID,State``).

    Job steps (``12_0.batch``) are skipped; ``CANCELLED by 0`` reads ``CANCELLED``; array
    ranges are expanded into one entry per task.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if not sep or not job_id or "." in job_id or not state.strip():
            continue
        for one in expand_job_id(job_id):
            states[one] = state.split()[0].rstrip("+")
    return states


def _run(command: list[str]) -> str:
    """stdout of ``command``, or empty when it is missing, fails or hangs.

    ``squeue -j`` exits non-zero when none of the ids is still known to the controller,
    which only means that all of them ended a while ago.
    """
    if shutil.which(command[0]) is None:
        return ""
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def scheduler_available() -> bool:
    """Whether this machine has the SLURM commands that report job states."""
    return shutil.which("squeue") is not None or shutil.which("sacct") is not None


def query_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The SLURM state of each job id (``123`` or ``123_4``) that the scheduler knows.

    ``squeue`` answers first: it knows a job from the moment it is submitted, while the
    accounting database may lag by a moment. ``sacct`` answers for the jobs the controller has
    forgotten (``MinJobAge`` after they ended); of a requeued job it reports the latest run.
    """
    wanted = sorted(set(job_ids))
    if not wanted:
        return {}
    bases = ",".join(sorted({base_job_id(j) for j in wanted}))
    states = parse_states(_run(["squeue", "-h", "--array", "-o", "%i|%T", "-j", bases]))
    rest = [j for j in wanted if j not in states]
    if rest:
        rest_bases = ",".join(sorted({base_job_id(j) for j in rest}))
        accounted = parse_states(
            _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", rest_bases])
        )
        states.update({j: accounted[j] for j in rest if j in accounted})
    return {j: states[j] for j in wanted if j in states}


def never_clears(reason: str | None) -> bool:
    """Whether a pending job's reason keeps it pending for ever (until it is cancelled or the
    cluster is reconfigured): a partition limit, a per-job QOS/account limit, a bad constraint
    or dependency. Waiting reasons (Resources, Priority, a group's running jobs, ...) clear."""
    if not reason:
        return False
    return reason in NEVER_CLEARING_REASONS or _PER_JOB_LIMIT.match(reason) is not None


def query_reasons(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM's reason (``squeue`` ``%r``: Resources, Priority, PartitionConfig, ...) for each
    of ``job_ids`` that is pending now."""
    wanted = sorted(set(job_ids))
    if not wanted:
        return {}
    bases = ",".join(sorted({base_job_id(j) for j in wanted}))
    text = _run(["squeue", "-h", "--array", "-t", "PENDING", "-o", "%i|%r", "-j", bases])
    reasons = parse_states(text)  # the same JOBID|WORD lines
    return {j: reasons[j] for j in wanted if j in reasons}
