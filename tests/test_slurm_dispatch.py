"""``bench run --launcher slurm`` against a real SLURM cluster (``slurm/cluster.sh start``):
one job array per grid, reruns that submit only what is missing, a requeued run that resumes to
the same result as an uninterrupted one, and failed runs in ``bench status``.

Skipped without a cluster; failed without one in CI (see slurm_util). The array tasks run this
checkout's harness (the launcher puts it on their PYTHONPATH) with the tiny synthfer settings.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from slurm_util import require_slurm, wait_for_final_states

from harness.cli import main
from harness.launchers.records import find_records
from harness.plan import build_plan
from harness.spec import RunSpec
from harness.store import load_result, result_path, run_dir
from harness.worker import run_spec

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm_args(
    tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """The tiny settings, one thread and one core per task, fast polling; a wide console.
    Jobs a test leaves behind (when it fails) are cancelled."""
    require_slurm()
    monkeypatch.setenv("COLUMNS", "400")
    yield [
        *tiny,
        "train.threads=1",  # results depend on the thread count; keep it equal everywhere
        "launcher.cpus_per_task=1",
        "launcher.time_min=10",
        "launcher.poll_s=0.5",
    ]
    job_ids = [r.job_id for r in find_records(tmp_path / "results")]
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)


def bench_run(grid: list[str], results: Path, overrides: list[str], *flags: str) -> int:
    return main(
        ["run", *grid, "--launcher", "slurm", "--results-dir", str(results), "--no-progress",
         *flags, *overrides]
    )  # fmt: skip


def test_grid_is_one_array_and_reruns_submit_only_what_is_missing(
    slurm_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    grid = ["--methods", "supervised,fixmatch", "--labels", "10%", "--seeds", "0,1"]
    slurm_args = [*slurm_args, "train.steps=20", "train.eval_every=20"]
    assert bench_run(grid, results, slurm_args, "--wait") == 0

    records = find_records(results)
    assert len(records) == 4
    (array,) = {r.array_job_id for r in records}  # ONE array ...
    assert sorted(r.task_index for r in records) == [0, 1, 2, 3]  # ... of four tasks
    assert len(list((results / "synthfer").glob("*.json"))) == 4
    states = wait_for_final_states([r.job_id for r in records], timeout_s=60)
    assert states == {r.job_id: "COMPLETED" for r in records}
    for record in records:
        result = load_result(results / record.dataset / f"{record.run_id}.json")
        slurm = result["provenance"]["slurm"]
        assert slurm["SLURM_ARRAY_JOB_ID"] == array
        assert slurm["SLURM_ARRAY_TASK_ID"] == str(record.task_index)
        assert slurm["SLURMD_NODENAME"]

    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    board = (results / "leaderboard.md").read_text()
    rows = [line.split("|")[1].strip() for line in board.splitlines() if line.startswith("| ")]
    assert {"supervised", "fixmatch"} <= set(rows)

    capsys.readouterr()
    assert main(["status", *grid, "--launcher", "slurm", "--results-dir", str(results),
                 *slurm_args]) == 0  # fmt: skip
    assert "4 runs: 4 done" in capsys.readouterr().out

    # The same command again submits nothing.
    assert bench_run(grid, results, slurm_args) == 0
    out = capsys.readouterr().out
    assert "4 runs, 0 to run" in out and "submitted" not in out
    assert find_records(results) == records

    # Without one result file, exactly that run is submitted again.
    victim = records[2]
    (results / victim.dataset / f"{victim.run_id}.json").unlink()
    assert bench_run(grid, results, slurm_args, "--wait") == 0
    assert "4 runs, 1 to run" in capsys.readouterr().out
    after = {r.run_id: r for r in find_records(results)}
    changed = [r.run_id for r in records if after[r.run_id] != r]
    assert changed == [victim.run_id]
    assert after[victim.run_id].job_id not in {r.job_id for r in records}
    assert (results / victim.dataset / f"{victim.run_id}.json").is_file()


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.1)


def _reference(spec: RunSpec, results: Path) -> dict:
    """The same run, uninterrupted, in this process."""
    threads = torch.get_num_threads()
    try:
        return run_spec(spec, results, show_progress=False)
    finally:
        torch.set_num_threads(threads)  # the run set train.threads=1 for this process


@pytest.mark.slow
def test_requeued_run_resumes_to_the_same_result(
    slurm_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    grid = ["--methods", "supervised", "--labels", "25%", "--seeds", "0"]
    # Long enough that the requeue lands mid-training: SLURM lets the first task run on for
    # KillWait seconds after `scontrol requeue` (submitit ignores the SIGTERM).
    overrides = [*slurm_args, "train.steps=300", "train.eval_every=150", "train.checkpoint_every=5"]
    assert bench_run(grid, results, overrides) == 0  # returns at once
    (record,) = find_records(results)

    # While the job is queued or running, the same command submits nothing.
    capsys.readouterr()
    assert bench_run(grid, results, overrides) == 0
    assert "1 run, 0 to run" in capsys.readouterr().out
    assert find_records(results) == [record]

    (spec,) = build_plan("supervised", "25%", "0", "synthfer", [*overrides, "launcher=slurm"])
    assert spec.run_id == record.run_id
    _wait_for(run_dir(results, spec) / "checkpoint.pt", timeout_s=120)
    assert not result_path(results, spec).exists()
    subprocess.run(["scontrol", "requeue", record.job_id], check=True, timeout=30)

    reference = _reference(spec, tmp_path / "reference")  # while the job waits to restart

    # --wait with nothing to submit follows the queued run to its end.
    assert bench_run(grid, results, overrides, "--wait") == 0
    result = load_result(result_path(results, spec))
    assert result["timing"]["resumed_from_step"] is not None
    assert result["timing"]["resumed_from_step"] > 0
    assert int(result["provenance"]["slurm"]["SLURM_RESTART_COUNT"]) >= 1
    assert result["metrics"] == reference["metrics"]
    assert result["evaluations"] == reference["evaluations"]
    assert find_records(results) == [record]  # the same job, restarted: not a new submission
    assert wait_for_final_states([record.job_id]) == {record.job_id: "COMPLETED"}


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_resumes(
    slurm_args: list[str], tmp_path: Path
) -> None:
    """The signal SLURM sends ``signal_delay_s`` before the time limit (``--signal=B:USR2@N``),
    sent now: Python, exec-ed as the batch shell, gets it; the engine saves a checkpoint of the
    step it is on, submitit calls ``SlurmRun.checkpoint`` and requeues the job, which resumes
    from that step. No periodic checkpoint falls inside the run, so only the one saved at the
    signal can make it resume."""
    results = tmp_path / "results"
    grid = ["--methods", "supervised", "--labels", "25%", "--seeds", "1"]
    overrides = [
        *slurm_args, "train.steps=400", "train.eval_every=200", "train.checkpoint_every=100000",
    ]  # fmt: skip
    assert bench_run(grid, results, overrides) == 0
    (record,) = find_records(results)
    (spec,) = build_plan("supervised", "25%", "1", "synthfer", [*overrides, "launcher=slurm"])
    assert spec.run_id == record.run_id
    step_log = run_dir(results, spec) / "metrics.jsonl"
    _wait_for(step_log, timeout_s=120)  # opened when training starts
    subprocess.run(["scancel", "--batch", "--signal=USR2", record.job_id], check=True, timeout=30)

    reference = _reference(spec, tmp_path / "reference")  # while the job is requeued
    assert bench_run(grid, results, overrides, "--wait") == 0
    result = load_result(result_path(results, spec))
    events = [json.loads(line) for line in step_log.open() if '"event"' in line]
    stops = [e["step"] for e in events if e["event"] == "stop"]
    assert len(stops) == 1 and 0 < stops[0] < 400
    assert result["timing"]["resumed_from_step"] == stops[0]
    assert int(result["provenance"]["slurm"]["SLURM_RESTART_COUNT"]) >= 1
    assert result["metrics"] == reference["metrics"]
    assert result["evaluations"] == reference["evaluations"]
    logs = Path(record.stdout).read_text() + Path(record.stderr).read_text()
    assert "stop requested: checkpoint saved at step" in logs
    assert "Caught signal SIGUSR2" in logs and "Calling checkpoint method" in logs
    assert wait_for_final_states([record.job_id]) == {record.job_id: "COMPLETED"}


def test_crashing_runs_show_as_failed_with_log_and_error(
    slurm_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    # A dataset folder that is gone by the time the job starts (planning reads its content).
    gone = ["--methods", "supervised", "--dataset", "rafdb"]
    launcher = [o for o in slurm_args if o.startswith("launcher.")]
    (tmp_path / "RAF-DB").mkdir()
    launcher.append("+launcher.additional_parameters.begin=now+2")  # time to remove it
    assert bench_run(gone, results, [*launcher, f"dataset.root={tmp_path / 'RAF-DB'}"]) == 0
    (tmp_path / "RAF-DB").rmdir()
    # An array whose second task asks for more labels than the training set has (only the run
    # can tell): it fails, the first task completes.
    grid = ["--methods", "supervised", "--labels", "10%,100000", "--seeds", "0"]
    assert bench_run(grid, results, slurm_args, "--wait") == 1

    good, bad, vanished = (
        {r.labels: r for r in find_records(results) if r.dataset == "synthfer"}["10%"],
        {r.labels: r for r in find_records(results) if r.dataset == "synthfer"}["100000"],
        next(r for r in find_records(results) if r.dataset == "rafdb"),
    )
    assert good.array_job_id == bad.array_job_id is not None
    assert (results / "synthfer" / f"{good.run_id}.json").is_file()
    states = wait_for_final_states([good.job_id, bad.job_id, vanished.job_id], timeout_s=180)
    assert states == {good.job_id: "COMPLETED", bad.job_id: "FAILED", vanished.job_id: "FAILED"}

    capsys.readouterr()
    assert main(["status", *grid, "--launcher", "slurm", "--results-dir", str(results),
                 *slurm_args]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "2 runs: 1 done, 1 failed" in out
    assert f"log: {bad.stderr}" in out
    assert "the training set has only 280 images" in " ".join(out.split())

    assert main(["status", "--all", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 runs: 1 done, 2 failed" in out
    assert f"log: {vanished.stderr}" in out
    assert "RAF-DB folder not found" in " ".join(out.split())


def test_a_refused_submission_is_a_clear_error(
    slurm_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The node has no GPU: the request is refused before sbatch sees it, naming the option.
    grid = ["--methods", "supervised", "--seeds", "0,1"]
    assert bench_run(grid, tmp_path / "results", [*slurm_args, "launcher.gpus_per_node=1"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "launcher.gpus_per_node=1 but its nodes have no GPU" in out, out
    assert find_records(tmp_path / "results") == []
    # What the check does not cover (an sbatch option of its own) sbatch refuses, and the error
    # says which options to check.
    bad = [*slurm_args, "+launcher.additional_parameters.gres=gpu:1"]
    assert bench_run(grid, tmp_path / "results", bad) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "sbatch refused the job array" in out and "gres" in out and "launcher.*" in out
    assert find_records(tmp_path / "results") == []
