"""What several test files share: the real ``bench`` in a subprocess, a stop request after N
steps, and result dicts as ``bench run`` stores them (only the fields a test reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.spec import config_hash

ROOT = Path(__file__).resolve().parents[1]


def bench(
    *args: str, cwd: Path, columns: int | None = None, path: Sequence[Path] = ()
) -> subprocess.CompletedProcess:
    """The real ``bench`` in a subprocess (this checkout, then ``path``, on its path);
    ``columns``: the terminal width rich wraps its output to (tests that match whole lines set
    it)."""
    width = {"COLUMNS": str(columns)} if columns is not None else {}
    pythonpath = os.pathsep.join(map(str, [ROOT, *path]))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath, **width},
        timeout=300,
    )


def start_in_own_group(*args: str, cwd: Path) -> subprocess.Popen:
    """``bench`` in a process group of its own, as a terminal's foreground job is: a Ctrl-C is
    then ``os.killpg(proc.pid, SIGINT)``, and reaches every process it started."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def spawned_grandchildren(pid: int) -> list[int]:
    """Spawned processes two generations below ``pid`` (for a parallel grid: what its runs
    start). Polled often, the first one found is still starting up."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    children = {p for p, parent in parents.items() if parent == pid}
    found = []
    for p in (p for p, parent in parents.items() if parent in children):
        try:
            if b"spawn_main" in (Path("/proc") / str(p) / "cmdline").read_bytes():
                found.append(p)
        except OSError:
            continue  # ended meanwhile
    return found


def wait_for_spawned_grandchildren(proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Return as soon as ``proc``'s runs start their first worker process (still starting up);
    fail with ``proc``'s output if it ends or ``timeout_s`` passes first."""
    deadline = time.time() + timeout_s
    while not spawned_grandchildren(proc.pid):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)


def stop_after(steps: int) -> Callable[[], bool]:
    """A ``stop_requested`` for ``run_spec`` that asks to stop at the ``steps``-th time it is
    polled (the engine polls once per step): the run stops after step ``steps``."""
    asked: list[bool] = []

    def stop_requested() -> bool:
        asked.append(True)
        return len(asked) >= steps

    return stop_requested


def result_dict(
    method_label: str = "fixmatch",
    labels: str = "10%",
    seed: int = 0,
    top1: float = 50.0,
    *,
    dataset: str = "synthfer",
    **fields: Any,
) -> dict[str, Any]:
    """The fields every stored result has, with top-1 as its only metric; ``fields`` add or
    replace others (``run_id``, ``tag``, ``diagnostics``, ...)."""
    return {
        "dataset": dataset,
        "method_label": method_label,
        "labels": labels,
        "seed": seed,
        "metrics": {"top1": top1},
        **fields,
    }


def scored_result(
    method_label: str,
    labels: str,
    seed: int,
    top1: float,
    *,
    dataset: str = "synthfer",
    tag: str = "",
    **config_extra: object,
) -> dict[str, Any]:
    """A result as the leaderboard reads it: config and its hash (``config_extra`` adds config
    keys), the three table metrics (mean class accuracy and macro-F1 10 and 20 below top-1),
    the split size, and a finishing date one day per seed."""
    method = method_label.split("[")[0]
    config = {
        "seed": seed,
        "labels": labels,
        "tag": tag,
        "method": {"name": method},
        "train": {"steps": 10},
        **config_extra,
    }
    return {
        "dataset": dataset,
        "method": method,
        "method_label": method_label,
        "labels": labels,
        "seed": seed,
        "tag": tag,
        "config_hash": config_hash(config),
        "config": config,
        "metrics": {"top1": top1, "mean_class_acc": top1 - 10, "macro_f1": top1 - 20},
        "split": {"num_labelled": 10},
        "provenance": {},
        "timing": {"finished": f"2026-01-{seed + 1:02d}T00:00:00+00:00"},
    }
