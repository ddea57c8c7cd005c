"""Launchers without a cluster: SLURM settings and batch scripts, chunking, dry runs, the run
states behind skip logic and ``bench status`` (scheduler answers given by hand), job records,
and the local launcher running runs in parallel."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import cloudpickle
import pytest
from helpers import result_dict
from rich.console import Console

from harness.cli import main
from harness.config import compose_config
from harness.errors import ConfigError
from harness.failure import write_failure
from harness.launchers import build_launcher
from harness.launchers.local import LocalLauncher
from harness.launchers.records import SlurmRecord, find_records, read_record, write_record
from harness.launchers.scheduler import expand_job_id, parse_states
from harness.launchers.slurm import (
    SlurmRun,
    chunked,
    sbatch_script,
    settings_from_config,
)
from harness.launchers.status import (
    all_statuses,
    classify,
    grid_statuses,
    needs_launch,
    print_failures,
    status_table,
)
from harness.plan import build_plan
from harness.run_info import write_run_info
from harness.spec import RunSpec
from harness.store import claim_run, result_path, run_dir

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--methods", "supervised,fixmatch", "--labels", "10%", "--seeds", "0,1"]


def slurm_cfg(*overrides: str) -> dict:
    """The ``launcher`` node of a run composed with ``launcher=slurm`` and ``overrides``."""
    return compose_config(["launcher=slurm", *overrides])["launcher"]


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough that table cells are not folded."""
    monkeypatch.setenv("COLUMNS", "300")


# --- chunking and SLURM settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size", "lengths"),
    [
        (0, 1000, []),
        (1, 1000, [1]),
        (4, 1000, [4]),
        (1000, 1000, [1000]),
        (1001, 1000, [500, 501]),
        (2001, 1000, [667, 667, 667]),
        (5, 2, [1, 2, 2]),
    ],
)
def test_chunks_cover_the_grid_in_order_under_the_limit(
    count: int, size: int, lengths: list[int]
) -> None:
    chunks = chunked(list(range(count)), size)
    assert [len(c) for c in chunks] == lengths
    assert [x for c in chunks for x in c] == list(range(count))


def test_slurm_config_defaults_and_overrides() -> None:
    default = settings_from_config(slurm_cfg())
    assert default.time_min == 60 and default.max_array_size == 1000
    assert default.partition is None and default.gpus_per_node == 0
    assert default.use_srun is False

    settings = settings_from_config(
        slurm_cfg(
            "launcher.partition=gpu",
            "launcher.account=fer",
            "launcher.time_min=30",
            "launcher.gpus_per_node=1",
            "launcher.mem_gb=16",
            "launcher.array_parallelism=2",
            "launcher.setup=[module load cuda/12.1,source /opt/venv/bin/activate]",
            "+launcher.additional_parameters.constraint=a100",
        )
    )
    script = sbatch_script(settings, Path("/shared/logs"), num_tasks=4)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=fer",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=16GB",
        "#SBATCH --array=0-3%2",
        "#SBATCH --constraint=a100",
        "#SBATCH --cpus-per-task=4",
        # Without srun, Python replaces the batch shell and gets the signal itself.
        "#SBATCH --signal=B:USR2@90",
        "#SBATCH --output=/shared/logs/%A_%a_0_log.out",
        "module load cuda/12.1",
        "source /opt/venv/bin/activate",
    ):
        assert line in script.splitlines(), line
    command = script.strip().splitlines()[-1]
    assert command.startswith("exec ") and "submitit.core._submit /shared/logs" in command
    # The setup makes this checkout importable, before the user's lines.
    setup = script.split("# setup\n")[1].splitlines()
    assert setup[0].startswith(f"export PYTHONPATH={ROOT}")
    assert "qos" not in script  # unset options are left to the cluster


def test_no_gpu_request_without_gpus_and_srun_gets_cpus() -> None:
    settings = settings_from_config(slurm_cfg("launcher.use_srun=true", "launcher.cpus_per_task=3"))
    script = sbatch_script(settings, Path("/logs"), num_tasks=1)
    assert "gpus" not in script  # a CPU-only node rejects even --gpus-per-node=0
    assert "#SBATCH --array" not in script  # one run: a plain job
    assert "#SBATCH --signal=USR2@90" in script.splitlines()
    srun = script.strip().splitlines()[-1]
    assert srun.startswith("srun ") and "--cpus-per-task=3" in srun and "exec" not in srun


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"time_min": 1.5}, "launcher.time_min must be an integer, got 1.5"),
        ({"time_min": 0}, "launcher.time_min must be >= 1, got 0"),
        ({"cpus_per_task": "two"}, "launcher.cpus_per_task must be an integer, got 'two'"),
        ({"mem_gb": -4}, "launcher.mem_gb must be > 0, got -4"),
        ({"setup": "module load cuda"}, "launcher.setup must be a list of strings, got 'module"),
        ({"additional_parameters": ["a"]}, "launcher.additional_parameters must be a mapping"),
        ({"signal_delay_s": 3600}, "must be shorter than launcher.time_min"),
        ({"use_srun": "no"}, "launcher.use_srun must be true or false, got 'no'"),
        ({"job_name": " "}, "launcher.job_name must be a non-blank string, got ' '"),
        ({"partitoin": "gpu"}, "launcher: unknown setting partitoin; known: partition"),
    ],
)
def test_bad_slurm_settings_say_which_option_and_what_is_expected(
    patch: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_config({**slurm_cfg(), **patch})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_slurm_settings_come_from_the_command_line() -> None:
    # Hydra reads the values; the launcher checks them.
    with pytest.raises(ConfigError, match=r"got 1\.5"):
        settings_from_config(slurm_cfg("launcher.time_min=1.5"))


def test_unknown_launcher_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="choose: local, slurm"):
        build_launcher({"name": "pbs"}, Console())


def test_dry_run_prints_the_grid_and_the_batch_script_and_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    results = tmp_path / "results"
    code = main(
        ["run", *GRID, "--launcher", "slurm", "--dry-run", "--results-dir", str(results),
         "launcher.partition=gpu", "launcher.max_array_size=3", "launcher.time_min=20"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "4 runs, 4 to run" in out
    assert "SLURM: 4 runs in 2 array(s)" in out
    assert "--- array 1/2: 2 tasks" in out and "--- array 2/2: 2 tasks" in out
    assert out.count("#SBATCH --partition=gpu") == 2
    assert "#SBATCH --time=20" in out and "#SBATCH --array=0-1%2" in out
    assert str(results / "runs" / "slurm") in out
    assert not results.exists()  # nothing submitted, nothing written


def test_slurm_launcher_without_slurm_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, srun, squeue or sacct here
    code = main(["run", *GRID, "--launcher", "slurm", "--results-dir", str(tmp_path / "r")])
    assert code == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "sbatch/srun not found on this machine" in out and "--launcher local" in out
    assert not (tmp_path / "r").exists()


# --- scheduler answers, run states, skip logic -------------------------------------------------


def test_scheduler_output_is_parsed_per_task() -> None:
    assert expand_job_id("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_job_id("12_3") == ["12_3"] and expand_job_id("12") == ["12"]
    text = "\n".join(
        [
            "12_0|COMPLETED",
            "12_0.batch|COMPLETED",
            "12_1|CANCELLED by 0",
            "12_[2-3%2]|PENDING",
            "13|RUNNING",
            "garbage",
        ]
    )
    assert parse_states(text) == {
        "12_0": "COMPLETED",
        "12_1": "CANCELLED",
        "12_2": "PENDING",
        "12_3": "PENDING",
        "13": "RUNNING",
    }


@pytest.mark.parametrize(
    ("done", "has_record", "scheduler", "state"),
    [
        (True, True, "RUNNING", "done"),  # the result is what counts
        (False, False, None, "missing"),
        (False, True, None, "missing"),  # the scheduler forgot the job
        (False, True, "PENDING", "pending"),
        (False, True, "REQUEUED", "pending"),
        (False, True, "RUNNING", "running"),
        (False, True, "COMPLETING", "running"),
        (False, True, "FAILED", "failed"),
        (False, True, "TIMEOUT", "failed"),
        (False, True, "CANCELLED", "failed"),
        (False, True, "OUT_OF_MEMORY", "failed"),
        (False, True, "COMPLETED", "missing"),  # finished, then its result was deleted
    ],
)
def test_classify(done: bool, has_record: bool, scheduler: str | None, state: str) -> None:
    record = _record("r", "1_0", Path("/x")) if has_record else None
    assert classify(done, record, scheduler) == state


def _record(run_id: str, job_id: str, logs: Path, spec: RunSpec | None = None) -> SlurmRecord:
    array, _, index = job_id.partition("_")
    return SlurmRecord(
        run_id=run_id,
        dataset=spec.dataset if spec else "synthfer",
        method_label=spec.method_label if spec else "supervised",
        labels=spec.labels if spec else "10%",
        seed=spec.seed if spec else 0,
        job_id=job_id,
        array_job_id=array if index else None,
        task_index=int(index) if index else None,
        stdout=str(logs / f"{job_id}_0_log.out"),
        stderr=str(logs / f"{job_id}_0_log.err"),
        submitted="2026-01-01T00:00:00+00:00",
        folder=str(logs),
    )


def _fake_result(results: Path, spec: RunSpec) -> None:
    path = result_path(results, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = result_dict(
        spec.method_label, spec.labels, spec.seed, dataset=spec.dataset, run_id=spec.run_id
    )
    path.write_text(json.dumps(result))


@pytest.fixture
def grid() -> list[RunSpec]:
    """Six runs: supervised × {10%, 25%, 50%} × seeds {0, 1} (planned, never trained here)."""
    return build_plan("supervised", "10%,25%,50%", "0,1", "synthfer", [])


def test_only_missing_and_failed_runs_are_launched(
    grid: list[RunSpec], tmp_path: Path, wide: None
) -> None:
    results, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    done, running, pending, failed, deleted, never = grid
    _fake_result(results, done)
    jobs = [(running, "7_1"), (pending, "7_2"), (failed, "7_3"), (deleted, "7_4"), (done, "7_0")]
    for spec, job in jobs:
        write_record(results, _record(spec.run_id, job, logs, spec))
    (logs / "7_3_0_log.err").write_text(
        "[12:00:00] supervised: synthfer (280 train / 140 test)\n"
        "Traceback (most recent call last):\n"
        '  File "harness/worker.py", line 1, in run_spec\n'
        "harness.errors.DatasetError: RAF-DB folder not found at /data/gone\n\n"
    )
    # Run 7_3's working folder has a log of 12 steps.
    run_dir(results, failed).mkdir(parents=True, exist_ok=True)
    (run_dir(results, failed) / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 1.0}\n{"event": "eval", "step": 12, "top1": 3.0}\n{"step": 1'
    )
    answers = {"7_0": "COMPLETED", "7_1": "RUNNING", "7_2": "PENDING", "7_3": "FAILED",
               "7_4": "COMPLETED"}  # fmt: skip
    asked: list[list[str]] = []

    def query(job_ids):
        asked.append(sorted(job_ids))
        return {j: answers[j] for j in job_ids if j in answers}

    statuses = grid_statuses(grid, results, query=query)
    assert [s.state for s in statuses] == [
        "done", "running", "pending", "failed", "missing", "missing"
    ]  # fmt: skip
    assert asked == [["7_1", "7_2", "7_3", "7_4"]]  # one question; none about finished runs
    assert statuses[0].job_id == "7_0"
    launch = [s.run_id for s in statuses if needs_launch(s)]
    assert launch == [failed.run_id, deleted.run_id, never.run_id]
    assert [s.run_id for s in statuses if needs_launch(s, force=True)] == [
        done.run_id,
        failed.run_id,
        deleted.run_id,
        never.run_id,
    ]  # fmt: skip  (never a queued or running job: it would run twice)

    broken = statuses[3]
    assert broken.log_path == str(logs / "7_3_0_log.err")
    assert broken.error[-1] == "harness.errors.DatasetError: RAF-DB folder not found at /data/gone"
    assert broken.step == 12  # the last complete line of the step log
    console = Console(record=True, width=300)
    console.print(status_table(statuses))
    print_failures(console, statuses)
    text = console.export_text()
    assert "1 done, 1 running, 1 pending, 1 failed, 2 missing" in text
    assert f"log: {logs / '7_3_0_log.err'}" in text
    assert "| harness.errors.DatasetError: RAF-DB folder not found at /data/gone" in text


def test_a_grid_without_records_never_asks_the_scheduler(
    grid: list[RunSpec], tmp_path: Path
) -> None:
    def query(job_ids):
        raise AssertionError("no SLURM record: no scheduler question")

    statuses = grid_statuses(grid, tmp_path, query=query)
    assert {s.state for s in statuses} == {"missing"}


def test_status_all_lists_results_records_and_interrupted_runs(
    grid: list[RunSpec], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    _fake_result(results, grid[0])
    write_record(results, _record(grid[1].run_id, "8_0", tmp_path, grid[1]))
    run_dir(results, grid[2]).mkdir(parents=True)
    (run_dir(results, grid[2]) / "checkpoint.pt").write_bytes(b"")
    statuses = all_statuses(results, query=lambda ids: {"8_0": "RUNNING"})
    by_id = {s.run_id: s for s in statuses}
    assert set(by_id) == {grid[0].run_id, grid[1].run_id, grid[2].run_id}
    assert by_id[grid[0].run_id].state == "done"
    assert by_id[grid[1].run_id].state == "running"
    assert by_id[grid[1].run_id].labels == grid[1].labels  # from the record
    assert by_id[grid[2].run_id].state == "missing"
    assert "resumes from its checkpoint" in by_id[grid[2].run_id].detail


def test_status_shows_a_run_in_training_and_a_failed_one_without_slurm(
    grid: list[RunSpec], tmp_path: Path
) -> None:
    """A local run: its lock held by a live process is `running` (pid, host, step from the
    step log), its failure record `failed` (the error's line, where the whole error is); with
    --all the method, labels and seed come from the run.json its worker wrote."""
    results = tmp_path / "results"
    training, broken, interrupted = grid[0], grid[1], grid[2]
    work = run_dir(results, training)
    with claim_run(work):
        write_run_info(work, training)
        (work / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n{"step": 7, "loss": 0.9}\n')
        write_run_info(run_dir(results, broken), broken)
        try:
            raise ValueError("shapes (3,) and (4,) do not match\nsecond line")
        except ValueError as err:
            write_failure(run_dir(results, broken), broken.run_id, err, step=12)
        for statuses in (grid_statuses(grid[:3], results), all_statuses(results)):
            by_id = {s.run_id: s for s in statuses}
            running = by_id[training.run_id]
            assert running.state == "running" and running.step == 7
            assert running.detail == f"pid {os.getpid()} on {socket.gethostname()}"
            assert (running.method_label, running.labels, running.seed) == ("supervised", "10%", 0)
            failed = by_id[broken.run_id]
            assert failed.state == "failed" and failed.step == 12
            assert failed.detail == "ValueError: shapes (3,) and (4,) do not match"
            assert (failed.method_label, failed.labels, failed.seed) == ("supervised", "10%", 1)
            assert needs_launch(failed) and not needs_launch(running)
        assert by_id.keys() == {training.run_id, broken.run_id}  # --all: nothing else known
        console = Console(record=True, width=300)
        print_failures(console, statuses)
        text = console.export_text()
        trace = run_dir(results, broken) / "failed.txt"
        assert f"failed {broken.run_id} (local run) at step 12" in text
        assert "error: ValueError: shapes (3,) and (4,) do not match" in text
        assert f"full error: {trace}" in text
        assert "second line" in trace.read_text() and "Traceback" in trace.read_text()
    assert grid_statuses([training], results)[0].state == "missing"  # released: not running
    assert {s.state for s in grid_statuses([interrupted], results)} == {"missing"}


def test_a_slurm_failure_shows_the_workers_error_and_the_jobs_log(
    grid: list[RunSpec], tmp_path: Path
) -> None:
    results, spec = tmp_path / "results", grid[0]
    write_record(results, _record(spec.run_id, "9_0", tmp_path, spec))
    (tmp_path / "9_0_0_log.err").write_text("Traceback ...\nharness.errors.DatasetError: gone\n")
    try:
        raise FloatingPointError("loss is nan at step 3")
    except FloatingPointError as err:
        write_failure(run_dir(results, spec), spec.run_id, err, step=3)
    (status,) = grid_statuses([spec], results, query=lambda ids: {"9_0": "FAILED"})
    assert status.state == "failed"
    assert status.detail == "FAILED: FloatingPointError: loss is nan at step 3"
    console = Console(record=True, width=300)
    print_failures(console, [status])
    text = console.export_text()
    assert f"failed {spec.run_id} (job 9_0, FAILED) at step 3" in text
    assert "full error: " in text and f"log: {tmp_path / '9_0_0_log.err'}" in text
    # The scheduler no longer knows the job (accounting purged): the record still tells.
    (status,) = grid_statuses([spec], results, query=lambda ids: {})
    assert status.state == "failed"


def test_records_round_trip_and_a_damaged_one_is_skipped(tmp_path: Path) -> None:
    record = _record("run-a", "9_2", tmp_path)
    path = write_record(tmp_path, record)
    assert path == tmp_path / "runs" / "run-a" / "slurm.json"
    assert read_record(path) == record
    assert not list(path.parent.glob(".tmp-*"))  # written through a temporary file
    bad = tmp_path / "runs" / "run-b" / "slurm.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.warns(UserWarning, match="run-b/slurm.json"):
        assert find_records(tmp_path) == [record]


def test_status_needs_a_grid_or_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--results-dir", str(tmp_path)]) == 2
    assert "needs either the grid's flags" in " ".join(capsys.readouterr().out.split())
    assert main(["status", "--all", "--results-dir", str(tmp_path)]) == 0
    assert "0 runs" in capsys.readouterr().out


def test_status_of_a_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None) -> None:
    specs = build_plan("supervised,fixmatch", "10%", "0,1", "synthfer", [])
    _fake_result(tmp_path, specs[0])
    assert main(["status", *GRID, "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 done, 3 missing" in out
    assert specs[3].run_id in out


# --- the job that runs on a node -----------------------------------------------------------


def test_slurm_job_pickles_and_requeues_the_same_call(grid: list[RunSpec]) -> None:
    job = cloudpickle.loads(cloudpickle.dumps(SlurmRun(force=True)))
    assert job.force is True
    delayed = job.checkpoint(grid[0], "/results")
    assert delayed.function is job
    assert delayed.args == (grid[0], "/results") and delayed.kwargs == {}


# --- local launcher ------------------------------------------------------------------------


@pytest.mark.slow
def test_local_parallel_runs_the_grid_and_reports_a_failed_run(
    tiny: list[str], tmp_path: Path
) -> None:
    # 100000 labels: more than the 280 training images, which only the run itself can tell.
    specs = build_plan("supervised", "10%,100000", "0", "synthfer", [*tiny, "train.steps=2",
                       "train.eval_every=2", "launcher.parallel=2"])  # fmt: skip
    console = Console(record=True, width=200)
    launcher = build_launcher(specs[0].config["launcher"], console, show_progress=False)
    assert isinstance(launcher, LocalLauncher) and launcher.parallel == 2
    outcomes = launcher.launch(specs, tmp_path, force=False)
    assert [o.run_id for o in outcomes] == [s.run_id for s in specs]
    assert [o.state for o in outcomes] == ["done", "failed"]
    assert "the training set has only 280 images" in outcomes[1].detail
    assert result_path(tmp_path, specs[0]).is_file()
    assert not result_path(tmp_path, specs[1]).exists()
    assert "2 at a time" in console.export_text()


def test_local_parallel_must_be_a_positive_count() -> None:
    with pytest.raises(ConfigError, match=r"launcher\.parallel must be >= 1, got 0"):
        LocalLauncher({"name": "local", "parallel": 0, "poll_s": 5}, Console())
    with pytest.raises(ConfigError, match=r"launcher\.poll_s must be > 0, got 0"):
        LocalLauncher({"name": "local", "parallel": 1, "poll_s": 0}, Console())
