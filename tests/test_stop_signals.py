"""Stop signals through the real ``bench`` command: SIGTERM stops a run as Ctrl-C does (the step
in progress finishes and is checkpointed, the run resumes to the uninterrupted result); a stop
sent to a parallel grid's process alone reaches its workers; a second stop signal aborts with
one line and 128 + the signal's number, leaving no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import bench, start_in_own_group, wait_for_spawned_grandchildren

from harness.checkpoint import read_checkpoint
from harness.cli import main


def _wait_for_training(proc: subprocess.Popen, results: Path, runs: int) -> None:
    """Until ``runs`` runs have logged a training step (their metrics.jsonl is line-buffered)."""
    deadline = time.time() + 240
    while sum(1 for p in results.glob("runs/*/metrics.jsonl") if p.read_text()) < runs:
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)


def _stop_steps(results: Path) -> dict[str, int]:
    """Each run's checkpointed step, checked against the step its log says it stopped at."""
    steps = {}
    for checkpoint in results.glob("runs/*/checkpoint.pt"):
        step = read_checkpoint(checkpoint)["step"]
        log = [json.loads(line) for line in (checkpoint.parent / "metrics.jsonl").open()]
        assert log[-1] == {"event": "stop", "step": step}, log[-3:]
        steps[checkpoint.parent.name] = step
    return steps


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_resumes_to_the_same_result(
    tiny: list[str], tmp_path: Path
) -> None:
    """``kill <pid>`` (SIGTERM) to a training run: exit 143, a checkpoint of the exact step it
    was on (no periodic checkpoint falls in the run), and the same command resumes from that
    step to the metrics of an uninterrupted run."""
    args = ["run", "--methods", "supervised", "--labels", "25%", "--no-progress", *tiny,
            "train.steps=300", "train.eval_every=150", "train.log_every=1",
            "train.checkpoint_every=100000"]  # fmt: skip
    stopped = tmp_path / "stopped"
    proc = start_in_own_group(*args, "--results-dir", str(stopped), cwd=tmp_path)
    _wait_for_training(proc, stopped, 1)
    proc.send_signal(signal.SIGTERM)  # the process alone, as `kill` sends it
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 143, output
    assert "SIGTERM: finishing the step" in output and "Traceback" not in output, output
    (step,) = _stop_steps(stopped).values()
    assert 0 < step < 300

    resumed = bench(*args, "--results-dir", str(stopped), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert main([*args, "--results-dir", str(tmp_path / "straight")]) == 0
    (a,) = (json.loads(p.read_text()) for p in (stopped / "synthfer").glob("*.json"))
    (b,) = (json.loads(p.read_text()) for p in (tmp_path / "straight" / "synthfer").glob("*.json"))
    assert a["timing"]["resumed_from_step"] == step
    assert a["metrics"] == b["metrics"] and a["evaluations"] == b["evaluations"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_sent_to_a_parallel_grids_process_alone_stops_every_run(
    signum: signal.Signals, tiny: list[str], tmp_path: Path
) -> None:
    """``kill -INT`` / ``kill -TERM`` to ``bench`` alone (a script, a supervisor: not the process
    group): the workers hear of it, every run in training checkpoints its step, the grid exits
    with 128 + the signal's number, and the same command finishes the grid."""
    results = tmp_path / "results"
    args = ["run", "--methods", "supervised", "--labels", "25%", "--seeds", "0,1,2",
            "--no-progress", "--results-dir", str(results), *tiny, "train.steps=300",
            "train.log_every=1", "train.checkpoint_every=100000",
            "launcher.parallel=2"]  # fmt: skip
    proc = start_in_own_group(*args, cwd=tmp_path)
    _wait_for_training(proc, results, 2)
    proc.send_signal(signum)
    try:
        output = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the workers trained on:\n{proc.communicate()[0]}")
    assert proc.returncode == 128 + signum, output
    assert "failed" not in output and "Traceback" not in output, output
    steps = _stop_steps(results)
    assert len(steps) == 2 and all(0 < s < 300 for s in steps.values()), (steps, output)
    assert "not started" in output and not list(results.glob("synthfer/*.json"))

    resumed = bench(*args[:-1], cwd=tmp_path)  # in one process: quicker, and the same runs
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = [json.loads(p.read_text()) for p in results.glob("synthfer/*.json")]
    assert len(finished) == 3
    assert {
        r["run_id"]: r["timing"]["resumed_from_step"] for r in finished if r["run_id"] in steps
    } == steps


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_with_one_line_and_exit_130(tiny: list[str], tmp_path: Path) -> None:
    """Two Ctrl-Cs while a parallel grid's runs still prepare their data (a dataset no other
    test renders): no traceback, one line, exit 130, and no worker process left running."""
    results = tmp_path / "results"
    args = ["run", "--methods", "supervised", "--labels", "25%", "--seeds", "0,1",
            "--no-progress", "--results-dir", str(results), *tiny,
            "dataset.generate.seed=987", "launcher.parallel=2"]  # fmt: skip
    proc = start_in_own_group(*args, cwd=tmp_path)
    wait_for_spawned_grandchildren(proc)  # the runs render their dataset
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        output = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"a second Ctrl-C did not end the grid:\n{proc.communicate()[0]}")
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.count("aborted (Ctrl-C)") == 1, output
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "workers left running"


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_runs_error_is_printed_once(
    parallel: int, tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A run that fails (more labels asked for than the training set has) is reported once, as
    it fails; the summary at the end names it without repeating the error. Exit 1."""
    monkeypatch.setenv("COLUMNS", "300")
    args = ["run", "--methods", "supervised", "--labels", "100000", "--seeds", "0,1",
            "--no-progress", "--results-dir", str(tmp_path), *tiny,
            f"launcher.parallel={parallel}"]  # fmt: skip
    assert main(args) == 1
    out = " ".join(capsys.readouterr().out.split())
    # One per run (the plan table's own "labelled" column names the shortfall without the
    # "--labels" prefix, before anything runs).
    assert out.count("--labels 100000: the training set has only 280 images") == 2, out
    assert out.count("(the error is printed above)") == 2
    assert "2 of 2 runs failed" in out
