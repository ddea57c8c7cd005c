"""The local SLURM cluster (slurm/cluster.sh) runs submitit jobs the way the SLURM launcher needs.

The tests marked `slurm` need a running cluster: skipped without one, failed without one in CI
(see slurm_util). The requeue test is also marked `slow` (about 30 s, most of it SLURM's wait
before a requeued job may start again).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import submitit
from slurm_util import (
    require_slurm,
    sacct_history,
    slurm_available,
    wait_for_final_states,
    wait_for_jobs,
)
from submitit.core.utils import FailedJobError


def square(x: int) -> tuple[int, str | None]:
    """A pure function, and which array task ran it."""
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def fail(x: int) -> None:
    """Print, then raise: the job's logs and error should carry both."""
    print(f"failing on {x}", flush=True)
    raise ValueError(f"bad input {x}")


class CountTo:
    """Counts to `n`, saving its progress after every step and resuming from it when rerun.

    This is how a requeued job resumes: `scontrol requeue` kills it (SIGTERM, which submitit
    ignores, then SIGKILL after KillWait) without calling any checkpoint hook, so the job can only
    go on from what it saved itself.
    """

    def __init__(self, progress: Path, n: int, step_s: float) -> None:
        self.progress = progress
        self.n = n
        self.step_s = step_s

    def __call__(self) -> dict[str, object]:
        start = int(self.progress.read_text()) if self.progress.exists() else 0
        runs = self.progress.with_suffix(".runs")
        with runs.open("a") as f:
            f.write(f"{start} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        for i in range(start, self.n):
            time.sleep(self.step_s)
            # Write-then-rename: SIGKILL may land at any moment, never on a half-written file.
            tmp = self.progress.with_suffix(".tmp")
            tmp.write_text(str(i + 1))
            os.replace(tmp, self.progress)
        # (start step, SLURM_RESTART_COUNT) of every run of this job.
        return {"runs": [tuple(map(int, line.split())) for line in runs.read_text().splitlines()]}


@pytest.fixture
def slurm() -> Iterator[None]:
    """A running cluster, and this module's functions pickled by value for the jobs.

    The jobs' Python cannot import this module (pytest put tests/ on its own sys.path only), so
    cloudpickle must send the code itself rather than a reference to it.
    """
    require_slurm()
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def _executor(folder: Path, **params: object) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j")
    assert executor.cluster == "slurm"  # chosen because srun is on PATH
    # submitit asks SLURM for USR2 90 s before the time limit and, that close to it, treats the
    # job as timed out (not requeued unless checkpointable); 10 min keeps that far from these
    # jobs, whose only signals must be the ones a test sends. (With 2 min, a requeued rerun on a
    # busy CI machine got USR2 and failed.)
    executor.update_parameters(slurm_partition="debug", timeout_min=10, cpus_per_task=1, **params)
    return executor


@pytest.mark.parametrize("ci", ["", "true"])
def test_require_slurm_without_cluster_skips_or_fails_in_ci(
    ci: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no srun
    monkeypatch.setenv("CI", ci)
    assert not slurm_available()
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="no SLURM cluster is running"):
        require_slurm()


@pytest.mark.slurm
def test_job_array_runs_and_completes(slurm: None, tmp_path: Path) -> None:
    executor = _executor(tmp_path, slurm_array_parallelism=2)
    jobs = executor.map_array(square, [3, 4])

    # One sbatch array: the tasks are <array id>_0 and <array id>_1.
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_0", f"{array_id}_1"]
    wait_for_jobs(jobs, timeout_s=45)
    assert [job.result() for job in jobs] == [(9, "0"), (16, "1")]
    ids = [job.job_id for job in jobs]
    assert wait_for_final_states(ids) == dict.fromkeys(ids, "COMPLETED")


@pytest.mark.slurm
def test_failing_job_reports_its_error(slurm: None, tmp_path: Path) -> None:
    job = _executor(tmp_path).submit(fail, 7)
    wait_for_jobs([job], timeout_s=45)

    # The traceback comes back through the result file; stdout/stderr are in job.paths.
    with pytest.raises(FailedJobError, match="ValueError: bad input 7"):
        job.result()
    assert "failing on 7" in (job.stdout() or "")
    assert "ValueError: bad input 7" in (job.stderr() or "")
    assert job.paths.stderr.parent == tmp_path / job.job_id
    assert wait_for_final_states([job.job_id]) == {job.job_id: "FAILED"}


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_job_resumes_from_its_progress(slurm: None, tmp_path: Path) -> None:
    """`scontrol requeue` on a running job: it is killed, waits ~15-20 s, and runs again."""
    progress = tmp_path / "progress.txt"
    n = 30
    job = _executor(tmp_path).submit(CountTo(progress, n=n, step_s=0.4))
    deadline = time.monotonic() + 120  # the node may be busy with other jobs first
    while not (progress.exists() and int(progress.read_text()) >= 2):
        assert time.monotonic() < deadline, "job never started counting"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=10)

    wait_for_jobs([job], timeout_s=90)
    runs = job.result()["runs"]
    assert len(runs) == 2, runs
    (first_start, first_restarts), (second_start, second_restarts) = runs
    assert (first_start, first_restarts) == (0, 0)
    # The rerun knows it is one (SLURM_RESTART_COUNT) and goes on from the saved step.
    assert second_restarts == 1
    assert 2 <= second_start < n
    assert int(progress.read_text()) == n
    assert wait_for_final_states([job.job_id]) == {job.job_id: "COMPLETED"}
    assert sacct_history(job.job_id) == ["REQUEUED", "COMPLETED"]
