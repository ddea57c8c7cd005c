"""What a SLURM partition offers, and a request checked against it before anything is submitted.

SLURM accepts some requests no node of the partition can ever satisfy (more CPUs per task than
any node has, a time limit above the partition's) and leaves them PENDING for ever, with the
reason ``PartitionConfig`` or ``PartitionTimeLimit``; others (too much memory, a GPU on a
CPU-only partition) it refuses with a terse message. :func:`check_request` refuses all of them
first, saying which launcher option asks for what and what the partition offers.

The parsers are pure functions of ``sinfo``'s and ``scontrol``'s text; :func:`partition_limits`
runs them.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import ConfigError

COMMAND_TIMEOUT_S = 30
# One line per node and partition: name|partition (``*`` marks the default)|CPUs|memory MB|
# generic resources|time limit.
SINFO_FORMAT = "%N|%P|%c|%m|%G|%l"
_GPU = re.compile(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class PartitionLimits:
    """The most one task can get on a partition: the largest node's CPUs, memory and GPUs
    (bounded by the partition's per-node limits) and the partition's time limit (None: no
    limit)."""

    name: str
    nodes: int
    cpus: int
    mem_mb: int
    gpus: int
    time_min: int | None

    def describe(self) -> str:
        """``partition debug: 1 node, at most 2 CPUs, 22900 MB, no GPU, no time limit``."""
        gpus = f"{self.gpus} GPUs" if self.gpus else "no GPU"
        time = "no time limit" if self.time_min is None else f"time limit {self.time_min} min"
        nodes = f"{self.nodes} node{'s' if self.nodes != 1 else ''}"
        return (
            f"partition {self.name}: {nodes}, at most {self.cpus} CPUs, {self.mem_mb} MB of "
            f"memory and {gpus} per node, {time}"
        )


def parse_time_limit(text: str) -> int | None:
    """SLURM's time format (``infinite``, ``30``, ``2:00:00``, ``1-12:00:00``) → whole
    minutes, rounded down; None for no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    match = _TIME.match(text)
    if match is None:
        return None
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # days-hours[:minutes[:seconds]]
        return days * 1440 + (a or 0) * 60 + (b or 0)
    if c is not None:  # hours:minutes:seconds
        return (a or 0) * 60 + (b or 0)
    return a or 0  # minutes, or minutes:seconds


def gpu_count(gres: str) -> int:
    """GPUs in a node's ``%G`` text: ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)`` → 0."""
    return sum(int(n) for n in _GPU.findall(gres.replace(" ", "")))


def _limit(text: str) -> int | None:
    """``MaxCPUsPerNode=UNLIMITED`` style values: None for no limit."""
    return int(text) if text.isdigit() else None


def parse_partition_limits(
    sinfo_text: str, scontrol_text: str, partition: str | None
) -> PartitionLimits | str:
    """The limits of ``partition`` (None: the default one) from ``sinfo -h -N -o SINFO_FORMAT``
    and ``scontrol show partition -o``; the names of the partitions there are when it is not
    among them."""
    rows = [line.split("|") for line in sinfo_text.splitlines() if line.count("|") == 5]
    names = sorted({row[1].rstrip("*") for row in rows})
    if partition is None:
        defaults = {row[1].rstrip("*") for row in rows if row[1].endswith("*")}
        partition = next(iter(defaults), None)
    mine = [row for row in rows if partition is not None and row[1].rstrip("*") == partition]
    if not mine:
        return ", ".join(names) or "(none)"
    fields = {}
    for line in scontrol_text.splitlines():
        pairs = dict(p.split("=", 1) for p in line.split() if "=" in p)
        if pairs.get("PartitionName") == partition:
            fields = pairs
    cpus = max(int(row[2].rstrip("+")) for row in mine)
    mem = max(int(row[3].rstrip("+")) for row in mine if row[3].rstrip("+").isdigit())
    max_cpus = _limit(fields.get("MaxCPUsPerNode", ""))
    max_mem = _limit(fields.get("MaxMemPerNode", ""))
    return PartitionLimits(
        name=partition,
        nodes=len({row[0] for row in mine}),
        cpus=min(cpus, max_cpus) if max_cpus else cpus,
        mem_mb=min(mem, max_mem) if max_mem else mem,
        gpus=max(gpu_count(row[4]) for row in mine),
        time_min=parse_time_limit(mine[0][5]),
    )


def _run(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_max_array_size(config_text: str) -> int | None:
    """``MaxArraySize`` from ``scontrol show config``'s text; None if it is not there."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config_text, re.MULTILINE)
    return int(match[1]) if match else None


@functools.cache
def cluster_max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` (an array's task indices must stay below it, so an array
    holds at most that many tasks), asked of ``scontrol``; None where it cannot be asked."""
    if shutil.which("scontrol") is None:
        return None
    return parse_max_array_size(_run(["scontrol", "show", "config"]) or "")


def array_size(configured: int, cluster: int | None) -> int:
    """The most tasks one array may hold: ``launcher.max_array_size``, lowered to the
    cluster's ``MaxArraySize`` when that is smaller (a larger array sbatch would refuse)."""
    return min(configured, cluster) if cluster else configured


def partition_limits(partition: str | None) -> PartitionLimits | None:
    """What ``partition`` (None: the default) offers, asked of ``sinfo`` and ``scontrol``;
    None where they are missing or do not answer (then sbatch has the last word). An unknown
    partition raises :class:`ConfigError` naming the ones there are."""
    if shutil.which("sinfo") is None:
        return None
    sinfo = _run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT])
    if not sinfo:
        return None
    scontrol = (
        _run(["scontrol", "show", "partition", "-o"]) if shutil.which("scontrol") else ""
    ) or ""
    limits = parse_partition_limits(sinfo, scontrol, partition)
    if isinstance(limits, str):
        what = f"partition {partition!r}" if partition else "a default partition"
        raise ConfigError(
            f"launcher.partition: this cluster has no {what}; its partitions: {limits}"
        )
    return limits


def request_problems(
    cpus: int, mem_gb: float | None, gpus: int, time_min: int, limits: PartitionLimits
) -> list[str]:
    """What in a task's request ``limits`` can never satisfy, one phrase each (empty: none)."""
    problems = []
    if cpus > limits.cpus:
        problems.append(
            f"launcher.cpus_per_task={cpus} but no node has more than {limits.cpus} CPUs"
        )
    if mem_gb is not None and mem_gb * 1024 > limits.mem_mb:
        problems.append(
            f"launcher.mem_gb={mem_gb:g} but no node has more than {limits.mem_mb} MB "
            f"({limits.mem_mb / 1024:.1f} GB)"
        )
    if gpus > limits.gpus:
        has = f"at most {limits.gpus} GPUs" if limits.gpus else "no GPU"
        problems.append(f"launcher.gpus_per_node={gpus} but its nodes have {has}")
    if limits.time_min is not None and time_min > limits.time_min:
        problems.append(f"launcher.time_min={time_min} but its time limit is {limits.time_min} min")
    return problems


def check_request(
    cpus: int, mem_gb: float | None, gpus: int, time_min: int, limits: PartitionLimits | None
) -> None:
    """Refuse, before submission, a request the partition can never satisfy: a
    :class:`ConfigError` naming each option, what it asks for and what the partition offers."""
    if limits is None:
        return
    problems = request_problems(cpus, mem_gb, gpus, time_min, limits)
    if problems:
        raise ConfigError(
            f"SLURM would never start these runs on partition {limits.name}: "
            f"{'; '.join(problems)} ({limits.describe()}). Lower the option(s), or choose "
            "another partition with launcher.partition=..."
        )
