"""The result store (atomic, never loses a finished result, safe for concurrent writers) and the
provenance block every stored result carries."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import result_dict

from harness.errors import BenchError
from harness.files import atomic_write_text
from harness.provenance import collect_provenance, git_state, slurm_info
from harness.spec import RunSpec
from harness.store import (
    RunBusyError,
    claim_run,
    has_result,
    load_results,
    lock_holder,
    result_path,
    run_dir,
    write_result,
)

REPO = Path(__file__).resolve().parents[1]


def _spec(method: str = "fixmatch", labels: str = "10%", seed: int = 0) -> RunSpec:
    return RunSpec("synthfer", method, method, labels, seed, {"seed": seed}, "ab" * 32)


def _result(value: int, **extra: object) -> dict:
    return result_dict(top1=float(value), **extra)


@pytest.fixture(params=["flock", "no-flock"])
def locking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with ``flock``, and again as on a file system without one (NFS ``nolock``,
    Lustre without ``-o flock``): the test switch makes every flock fail with ENOLCK, here and
    in child processes, and the harness falls back to soft locks."""
    if request.param == "no-flock":
        monkeypatch.setenv("FER_BENCH_NO_FLOCK", "1")
    return request.param


def test_paths_follow_the_layout(tmp_path: Path) -> None:
    spec = _spec(labels="25/class", seed=3)
    assert result_path(tmp_path, spec) == tmp_path / "synthfer" / f"{spec.run_id}.json"
    assert run_dir(tmp_path, spec) == tmp_path / "runs" / spec.run_id
    assert spec.run_id == "fixmatch__25perclass__seed3__abababab"


def test_write_then_exists_is_an_error_and_force_archives_the_old(tmp_path: Path) -> None:
    spec = _spec()
    path = result_path(tmp_path, spec)
    assert not has_result(tmp_path, spec)
    write_result(path, _result(1))
    assert has_result(tmp_path, spec)
    with pytest.raises(BenchError, match=r"exists; pass --force"):
        write_result(path, _result(2))
    assert json.loads(path.read_text())["metrics"]["top1"] == 1.0, "untouched by the refusal"

    write_result(path, _result(2), force=True)
    write_result(path, _result(3), force=True)
    assert json.loads(path.read_text())["metrics"]["top1"] == 3.0
    archived = sorted((run_dir(tmp_path, spec) / "superseded").glob("*.json"))
    assert [json.loads(p.read_text())["metrics"]["top1"] for p in archived] == [1.0, 2.0]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_results_are_readable_like_ordinary_files(tmp_path: Path) -> None:
    path = tmp_path / "synthfer" / "r.json"
    write_result(path, _result(1))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_an_unserialisable_result_costs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "synthfer" / "r.json"
    write_result(path, _result(1))
    with pytest.raises(TypeError):
        write_result(path, _result(2, bad={1, 2}), force=True)
    assert json.loads(path.read_text())["metrics"]["top1"] == 1.0
    assert not (tmp_path / "runs").exists(), "nothing archived: the old result stays in place"
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_atomic_write_text_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "board.md"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["board.md"]


def test_a_killed_writer_never_leaves_a_partial_result(tmp_path: Path) -> None:
    # A real process rewriting a large result as fast as it can, killed by SIGKILL (as SLURM
    # does at the time limit) at an arbitrary moment: the result is the old or the new whole.
    path = tmp_path / "synthfer" / "r.json"
    child = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.store import write_result\n"
        "path, i = Path(sys.argv[1]), 0\n"
        "while True:\n"
        "    result = {'dataset': 'synthfer', 'method_label': 'm', 'labels': '10%', 'seed': 0,\n"
        "              'metrics': {'top1': float(i)}, 'blob': 'x' * 300_000}\n"
        "    write_result(path, result, force=True)\n"
        "    i += 1\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    superseded = tmp_path / "runs" / "r" / "superseded"
    # Several kills, each at a different moment of a rewrite: one of them once landed between
    # archiving the old result and publishing the new one, and the result was gone.
    for kill in range(5):
        before = len(list(superseded.glob("*.json")))
        proc = subprocess.Popen([sys.executable, "-c", child, str(path)], env=env)
        deadline = time.monotonic() + 30
        try:
            while (
                len(list(superseded.glob("*.json"))) < before + 3 + kill
                and time.monotonic() < deadline
            ):
                time.sleep(0.003)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert len(list(superseded.glob("*.json"))) >= before + 3, "the writer never got going"
        for stored in [path, *superseded.glob("*.json")]:
            assert len(json.loads(stored.read_text())["blob"]) == 300_000
    assert len(load_results(tmp_path)) == 1, "leftover temporary files are not results"


def test_a_forced_rewrite_never_leaves_the_result_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SIGKILL test above only rarely lands in a given microsecond; this checks every step:
    # after each rename or link the store makes, a whole result is at its path.
    path = result_path(tmp_path, _spec())
    write_result(path, _result(1))
    seen: list[int] = []

    def checked(real: Callable[..., None]) -> Callable[..., None]:
        def call(*args: object) -> None:
            real(*args)
            seen.append(json.loads(path.read_text())["metrics"]["top1"])

        return call

    monkeypatch.setattr(os, "replace", checked(os.replace))
    monkeypatch.setattr(os, "link", checked(os.link))
    write_result(path, _result(2), force=True)
    assert seen and seen[-1] == 2, seen


def test_a_claimed_run_cannot_be_claimed_twice(tmp_path: Path, locking: str) -> None:
    work_dir = run_dir(tmp_path, _spec())
    busy = pytest.raises(RunBusyError, match=rf"pid {os.getpid()} on ")
    with claim_run(work_dir), busy, claim_run(work_dir):
        pass
    with claim_run(work_dir):  # released on leaving the block, errors included
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path, locking: str) -> None:
    work_dir = run_dir(tmp_path, _spec())
    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from harness.store import claim_run\n"
        "with claim_run(Path(sys.argv[1])):\n"
        "    print('claimed', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(work_dir)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        with pytest.raises(RunBusyError, match=f"pid {proc.pid} "), claim_run(work_dir):
            pass
        assert getattr(lock_holder(work_dir), "pid", None) == proc.pid  # bench status: running
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_holder(work_dir) is None  # the file is left, but nobody holds it
    with claim_run(work_dir):  # SIGKILL released it: no cleanup needed
        pass


def test_a_claim_names_its_holder_while_held_and_leaves_no_lock_file(
    tmp_path: Path, locking: str
) -> None:
    work_dir = run_dir(tmp_path, _spec())
    assert lock_holder(work_dir) is None
    with claim_run(work_dir):
        holder = lock_holder(work_dir)
        assert holder is not None and holder.pid == os.getpid()
        assert str(holder) == f"pid {os.getpid()} on {socket.gethostname()}"
    assert not (work_dir / "lock").exists()  # a finished run leaves no lock file
    assert lock_holder(work_dir) is None


def test_a_refused_claim_creates_no_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without flock (with it, removing the file is the release): between the holder removing
    # its lock file and releasing its soft lock, a refused claim must not create the file (it
    # would be left behind, naming nobody).
    monkeypatch.setenv("FER_BENCH_NO_FLOCK", "1")
    work_dir = run_dir(tmp_path, _spec())
    with claim_run(work_dir):
        (work_dir / "lock").unlink()  # the holder's release, half done
        with pytest.raises(RunBusyError), claim_run(work_dir):
            pass
        assert not (work_dir / "lock").exists()
    assert not list(work_dir.glob("lock*")) and not list(work_dir.glob(".tmp-*"))


def test_a_lock_file_nobody_holds_names_no_holder(tmp_path: Path) -> None:
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock = work_dir / "lock"
    lock.write_text(f"pid {gone.stdout.strip()} on {socket.gethostname()} since 2026-01-01\n")
    assert lock_holder(work_dir) is None  # its process is gone
    lock.write_text("pid 1 on some-other-node since 2026-01-01\n")
    assert lock_holder(work_dir) is None  # no flock holds it: left by a killed process
    with claim_run(work_dir):  # and it does not stop a new claim
        assert lock_holder(work_dir) is not None


def test_concurrent_writers_of_different_results(tmp_path: Path) -> None:
    def write_many(worker: int) -> None:
        for seed in range(10):
            spec = _spec(method=f"m{worker}", seed=seed)
            write_result(result_path(tmp_path, spec), _result(seed, method_label=f"m{worker}"))

    threads = [threading.Thread(target=write_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = load_results(tmp_path)
    assert len(results) == 40
    assert len({(r["method_label"], r["metrics"]["top1"]) for r in results}) == 40
    assert not [p for p in (tmp_path / "synthfer").iterdir() if p.name.startswith(".")]


def test_two_writers_racing_for_one_result_cannot_both_win(tmp_path: Path) -> None:
    path = tmp_path / "synthfer" / "r.json"
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def write(value: int) -> None:
        barrier.wait()
        try:
            write_result(path, _result(value))
            outcomes.append("written")
        except BenchError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(v,)) for v in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "written"]


def test_load_results_skips_and_names_what_is_not_a_result(tmp_path: Path) -> None:
    good = tmp_path / "synthfer" / "good.json"
    write_result(good, _result(1))
    (tmp_path / "synthfer" / "broken.json").write_text('{"dataset": "synth')
    (tmp_path / "synthfer" / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "synthfer" / "list.json").write_text("[1, 2]")
    (tmp_path / "synthfer" / ".tmp-x.json").write_text("{")
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x.json").write_text(json.dumps(_result(9)))  # under runs/: not a result
    (tmp_path / "leaderboard.md").write_text("# old")
    with pytest.warns(UserWarning) as caught:
        results = load_results(tmp_path)
    assert results == [_result(1)]
    messages = " ".join(str(w.message) for w in caught)
    for name in ("broken.json", "other.json", "list.json"):
        assert name in messages
    assert "missing dataset" in messages


def test_load_results_reads_what_json_dumps_writes(tmp_path: Path) -> None:
    # NaN (json.dumps writes it; orjson, the fast reader, refuses it) and integers past 64 bits
    # come back as the json module reads them; a broken file's warning names line and column.
    result = _result(1)
    result["metrics"]["pseudo_label_acc"] = float("nan")
    result["metrics"]["images"] = 2**70
    write_result(tmp_path / "synthfer" / "a.json", result)
    (tmp_path / "synthfer" / "b.json").write_text('{"dataset":\n "synthfer",,}')
    with pytest.warns(UserWarning, match=r"b\.json: not valid JSON .*line 2 column"):
        [loaded] = load_results(tmp_path)
    assert loaded["metrics"]["images"] == 2**70
    assert loaded["metrics"]["pseudo_label_acc"] != loaded["metrics"]["pseudo_label_acc"]


def test_load_results_is_sorted_by_path(tmp_path: Path) -> None:
    for dataset, name, value in [("rafdb", "b", 1), ("affectnet7", "z", 2), ("rafdb", "a", 3)]:
        write_result(tmp_path / dataset / f"{name}.json", _result(value))
    assert [r["metrics"]["top1"] for r in load_results(tmp_path)] == [2.0, 3.0, 1.0]
    assert load_results(tmp_path / "missing") == []


# Provenance: stored in every result, so tested with the store.


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_git_state_reports_commit_and_dirty_flag(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None}, "not a checkout"
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-qm", "c")
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "new_result.json").write_text("{}")
    assert git_state(tmp_path)["dirty"] is False, "untracked files do not count"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_git_state_without_git_does_not_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert git_state() == {"commit": None, "dirty": None}


def test_collect_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    info = collect_provenance(["bench", "run", "--labels", "10%"])
    assert info["command"] == ["bench", "run", "--labels", "10%"]
    assert info["slurm"]["SLURM_JOB_ID"] == "42" and info["slurm"]["SLURM_ARRAY_TASK_ID"] == "3"
    assert "SLURM_RESTART_COUNT" not in info["slurm"]
    packages = info["packages"]
    for name in ("python", "torch", "numpy", "scikit-learn", "pandas", "hydra-core"):
        assert packages[name], name
    assert info["device"] == "cpu" or "cpu" not in info["device"]
    assert info["cpu_count"] >= 1 and info["torch_threads"] >= 1
    assert info["started"].endswith("+00:00")
    assert json.loads(json.dumps(info)) == info
    assert slurm_info({}) is None
    assert slurm_info({"SLURMD_NODENAME": "gpu07", "HOME": "/x"}) == {"SLURMD_NODENAME": "gpu07"}


@pytest.mark.slow
def test_concurrent_processes_without_flock_or_hard_links_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    # 8 processes on a file system with neither flock nor hard links (the soft lock and the
    # locked check-then-rename are all that keep them apart): each claims every one of 20 runs
    # and writes its result if it is missing, and races the others for 20 shared results.
    child = (
        "import errno, json, os, sys\n"
        "from pathlib import Path\n"
        "def no_link(*args, **kwargs):\n"
        "    raise OSError(errno.EPERM, 'no hard links here')\n"
        "os.link = no_link\n"
        "from harness.errors import BenchError\n"
        "from harness.store import RunBusyError, claim_run, write_result\n"
        "root, me = Path(sys.argv[1]), int(sys.argv[2])\n"
        "claimed, raced = [], []\n"
        "def result(name):\n"
        "    return {'dataset': 'synthfer', 'method_label': name, 'labels': '10%', 'seed': me,\n"
        "            'metrics': {'top1': 1.0}, 'blob': 'x' * 50_000}\n"
        "for i in range(20):\n"
        "    path = root / 'synthfer' / f'r{i}.json'\n"
        "    try:\n"
        "        with claim_run(root / 'runs' / f'r{i}'):\n"
        "            if not path.exists():\n"
        "                write_result(path, result(f'r{i}'))\n"
        "                claimed.append(i)\n"
        "    except RunBusyError:\n"
        "        pass\n"
        "    try:\n"
        "        write_result(root / 'synthfer' / f's{i}.json', result(f's{i}'))\n"
        "        raced.append(i)\n"
        "    except BenchError:\n"
        "        pass\n"
        "print(json.dumps([claimed, raced]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_BENCH_NO_FLOCK": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(tmp_path), str(me)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in range(8)
    ]
    outputs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    claimed = sorted(i for out in outputs for i in out[0])
    raced = sorted(i for out in outputs for i in out[1])
    assert claimed == list(range(20)), "each claimed run written once: none lost, none twice"
    assert raced == list(range(20)), "each raced result won by exactly one writer"
    results = load_results(tmp_path)  # every file whole (a partial one would be skipped)
    assert len(results) == 40 and all(len(r["blob"]) == 50_000 for r in results)
    assert not [p for p in (tmp_path / "synthfer").iterdir() if p.name.startswith(".")]
    assert not list((tmp_path / "runs").glob("*/lock*")), "released locks leave no files"
