"""A SLURM request the cluster can never satisfy is refused before submission, naming the limit;
a job that pends for a reason that never clears shows the reason in ``bench status`` and ends
``--wait`` with a clear error instead of waiting for ever.

The parsers are tested on text; the tests marked ``slurm`` submit to the real one-node cluster
(2 CPUs, partition ``debug``; skipped without it, failed without it in CI)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import bench
from rich.console import Console
from slurm_util import require_slurm

from harness.cli import main
from harness.interrupts import StopAborted, abort_line
from harness.launchers.follow import follow
from harness.launchers.partition import (
    PartitionLimits,
    parse_partition_limits,
    parse_time_limit,
    request_problems,
)
from harness.launchers.records import SlurmRecord, find_records, write_record
from harness.launchers.scheduler import never_clears
from harness.launchers.status import grid_statuses, is_final
from harness.plan import build_plan

SINFO = """\
a01|cpu*|64|256000|(null)|2-00:00:00
a02|cpu*|32|128000|(null)|2-00:00:00
g01|gpu|32|512000|gpu:a100:4(S:0-1)|12:00:00
g02|gpu|32|512000|gpu:a100:8(S:0-1)|12:00:00
"""
SCONTROL = """\
PartitionName=cpu Default=YES MaxCPUsPerNode=48 MaxMemPerNode=UNLIMITED MaxTime=2-00:00:00
PartitionName=gpu Default=NO MaxCPUsPerNode=UNLIMITED MaxMemPerNode=262144 MaxTime=12:00:00
"""


def test_partition_limits_are_read_from_sinfo_and_scontrol() -> None:
    cpu = parse_partition_limits(SINFO, SCONTROL, None)  # the default partition
    assert cpu == PartitionLimits("cpu", 2, 48, 256000, 0, 2880)
    gpu = parse_partition_limits(SINFO, SCONTROL, "gpu")
    assert gpu == PartitionLimits("gpu", 2, 32, 262144, 8, 720)
    assert parse_partition_limits(SINFO, SCONTROL, "big") == "cpu, gpu"
    assert [parse_time_limit(t) for t in ("infinite", "30", "1:30:00", "1-00:00:00")] == [
        None, 30, 90, 1440
    ]  # fmt: skip


def test_every_impossible_part_of_a_request_is_named() -> None:
    gpu = parse_partition_limits(SINFO, SCONTROL, "gpu")
    assert isinstance(gpu, PartitionLimits)
    assert request_problems(8, 64, 1, 60, gpu) == []
    problems = request_problems(33, 300, 9, 721, gpu)
    assert problems == [
        "launcher.cpus_per_task=33 but no node has more than 32 CPUs",
        "launcher.mem_gb=300 but no node has more than 262144 MB (256.0 GB)",
        "launcher.gpus_per_node=9 but its nodes have at most 8 GPUs",
        "launcher.time_min=721 but its time limit is 720 min",
    ]


def test_reasons_that_never_clear() -> None:
    stuck = ["PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
             "QOSMaxCpuPerJobLimit", "AssocMaxWallDurationPerJobLimit", "QOSMinGRES"]  # fmt: skip
    waiting = ["Resources", "Priority", "QOSMaxJobsPerUserLimit", "AssocGrpCpuLimit",
               "Dependency", "BeginTime", "None", None]  # fmt: skip
    assert all(never_clears(r) for r in stuck)
    assert not any(never_clears(r) for r in waiting)


def test_status_shows_the_pending_reason_and_a_stuck_job_is_final(tmp_path: Path) -> None:
    waiting, stuck = build_plan("supervised", "10%", "0,1", "synthfer", [])
    for spec, job in ((waiting, "9_0"), (stuck, "9_1")):
        write_record(tmp_path, SlurmRecord(spec.run_id, spec.dataset, spec.method_label,
                                           spec.labels, spec.seed, job, "9", int(job[-1]),
                                           "o", "e", "t", "f"))  # fmt: skip
    statuses = grid_statuses(
        [waiting, stuck],
        tmp_path,
        query=lambda ids: dict.fromkeys(ids, "PENDING"),
        reasons=lambda ids: {"9_0": "Priority", "9_1": "PartitionConfig"},
    )
    assert statuses[0].detail == "PENDING (Priority)"
    assert statuses[1].detail.startswith("PENDING (PartitionConfig): SLURM will never start it")
    assert "scancel 9_1" in statuses[1].detail
    assert [is_final(s) for s in statuses] == [False, True]


@pytest.fixture
def slurm_results(tmp_path: Path) -> Iterator[Path]:
    """A results folder; the jobs a test leaves there are cancelled after it."""
    require_slurm()
    results = tmp_path / "results"
    yield results
    job_ids = [r.job_id for r in find_records(results)]
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)


@pytest.mark.slurm
def test_more_cpus_than_any_node_has_is_refused_before_submission(
    slurm_results: Path, tiny: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "300")
    args = ["run", "--methods", "supervised", "--launcher", "slurm", "--results-dir",
            str(slurm_results), "--no-progress", *tiny, "launcher.cpus_per_task=4"]  # fmt: skip
    assert main(args) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "launcher.cpus_per_task=4 but no node has more than 2 CPUs" in out, out
    assert "partition debug" in out
    assert find_records(slurm_results) == []  # nothing was submitted


@pytest.mark.slurm
def test_wait_stops_on_a_job_that_can_never_start_and_status_says_why(
    slurm_results: Path, tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    # Two nodes on a one-node partition: sbatch accepts it, SLURM pends it for ever.
    args = ["--methods", "supervised", "--launcher", "slurm", "--results-dir",
            str(slurm_results), *tiny, "launcher.cpus_per_task=1", "launcher.poll_s=0.5",
            "+launcher.additional_parameters.nodes=2"]  # fmt: skip
    started = time.monotonic()
    proc = bench("run", *args, "--no-progress", "--wait", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert time.monotonic() - started < 120
    out = " ".join(proc.stdout.split())
    (record,) = find_records(slurm_results)
    # PartitionConfig or PartitionNodeLimit, as the controller sees it first.
    assert re.search(r"PENDING \(Partition\w+\): SLURM will never start it", out), out
    assert f"scancel {record.job_id}" in out

    status = bench("status", *args, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    shown = " ".join(status.stdout.split())
    assert re.search(r"PENDING \(Partition\w+\): SLURM will never start it", shown), shown


def test_ctrl_c_while_following_says_the_jobs_go_on(tmp_path: Path) -> None:
    (spec,) = build_plan("supervised", "10%", "0", "synthfer", [])
    write_record(tmp_path, SlurmRecord(spec.run_id, spec.dataset, spec.method_label, spec.labels,
                                       spec.seed, "5", None, None, "o", "e", "t", "f"))  # fmt: skip

    def query(job_ids: object) -> dict[str, str]:
        raise KeyboardInterrupt  # Ctrl-C while asking the scheduler

    with pytest.raises(StopAborted) as caught:
        follow([spec], tmp_path, Console(), False, 0.01, query=query)
    line, code = abort_line(caught.value)
    assert code == 130 and "the submitted jobs go on" in line and "\n" not in line
