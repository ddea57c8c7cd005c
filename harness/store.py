"""The result store: one JSON per run under ``<results>/<dataset>/<run_id>.json``, written
atomically; per-run working state (checkpoint, step log) under ``<results>/runs/<run_id>/``
(git-ignored).

Finished results are never lost: rewriting one needs ``force``, and even then the old file is
first moved to ``runs/<run_id>/superseded/<timestamp>.json``. Many processes (SLURM tasks on
many nodes, sharing one file system) can write different results into one tree at once: every
temporary file has a unique name and each result appears in a single rename. One run trains in
one process at a time: ``claim_run`` locks its working folder.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from harness.errors import BenchError
from harness.files import LockBusy, atomic_write_text, fsync_dir, holder_of, locked, write_temp
from harness.spec import RunSpec

RUNS_DIR = "runs"
# A run's working folder <results_dir>/runs/<run_id>/ holds these (named here, not in the
# engine, so that `bench status` can look for them without importing torch).
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "metrics.jsonl"
SUPERSEDED_DIR = "superseded"
LOCK_NAME = "lock"
# What the leaderboard needs from a result; a JSON file without these is not one.
REQUIRED_KEYS = ("dataset", "method_label", "labels", "seed", "metrics")


def result_path(results_dir: Path, spec: RunSpec) -> Path:
    """Where the result of ``spec`` lives: ``<results_dir>/<dataset>/<run_id>.json``."""
    return Path(results_dir) / spec.dataset / f"{spec.run_id}.json"


def run_dir(results_dir: Path, spec: RunSpec) -> Path:
    """The run's working folder (checkpoint, step log, superseded results); git-ignored."""
    return Path(results_dir) / RUNS_DIR / spec.run_id


def has_result(results_dir: Path, spec: RunSpec) -> bool:
    """Whether ``spec`` has finished (its result file exists)."""
    return result_path(results_dir, spec).is_file()


class ResultWriteError(BenchError):
    """A result could not be written (a full disk); nothing partial was left."""


class RunBusyError(BenchError):
    """The run is being trained by another process (its working folder is locked)."""


@contextlib.contextmanager
def claim_run(work_dir: Path) -> Iterator[None]:
    """Hold the run's lock (``<work_dir>/lock``) for the duration of the block.

    Two processes training one run would overwrite each other's checkpoints, so the second
    one fails at once with :class:`RunBusyError`, naming the holder. The lock is
    :func:`harness.files.locked`: an ``flock`` the kernel drops when its holder dies, or where
    the file system has none a soft lock that a killed holder does not wedge (see
    docs/guarantees.md). The lock file is removed on release (a finished run leaves none);
    :func:`lock_holder` reads it.
    """
    try:
        with locked(work_dir / LOCK_NAME, wait=False):
            yield
    except LockBusy as busy:
        raise RunBusyError(
            f"{work_dir.name} is already being trained by {busy.holder}; wait for it to finish "
            "or stop it (it resumes from its checkpoint)"
        ) from None


@dataclass(frozen=True)
class LockHolder:
    """The process training a run, as its lock file names it."""

    pid: int | None
    host: str
    since: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid is not None else self.host


_HOLDER = re.compile(r"pid (\d+) on (\S+) since (\S+)")


def lock_holder(work_dir: Path) -> LockHolder | None:
    """Who holds the lock of the run in ``work_dir`` now; None when nobody does.

    No lock file: nobody (a released lock removes it). A file that a process of this host
    wrote that is gone, or that no ``flock`` holds any more (one left by a killed process or
    by an older version that kept the file): nobody. Asking never takes the lock from anyone.
    """
    text = holder_of(Path(work_dir) / LOCK_NAME)
    if text is None:
        return None
    match = _HOLDER.match(text)
    holder = (
        LockHolder(int(match[1]), match[2], match[3])
        if match
        else LockHolder(None, text or "unknown process", "")
    )
    if holder.pid is not None and holder.host == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return holder


def _publish_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist, atomically where the file
    system allows: a hard link fails if the target exists, so two writers racing for one
    result cannot overwrite each other."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"{path} exists; pass --force to rerun (the old result is kept)") from None
    except OSError:
        # No hard links here (some network or FUSE file systems): check, then rename, under a
        # lock so that two writers cannot both find the place free.
        with locked(path.with_name(f".{path.name}.lock")):
            if path.exists():
                tmp.unlink(missing_ok=True)
                raise BenchError(
                    f"{path} exists; pass --force to rerun (the old result is kept)"
                ) from None
            os.replace(tmp, path)
        return
    tmp.unlink(missing_ok=True)


def superseded_path(path: Path, when: datetime | None = None) -> Path:
    """Where a result at ``<results>/<dataset>/<run_id>.json`` is archived when forced over."""
    when = when or datetime.now(timezone.utc)
    stamp = when.strftime("%Y%m%dT%H%M%S.%fZ")
    return path.parents[1] / RUNS_DIR / path.stem / SUPERSEDED_DIR / f"{stamp}.json"


def _archive_copy(path: Path, archive: Path) -> None:
    """Keep the current ``path`` at ``archive`` without removing it: a hard link where the
    file system has them, else a copy written atomically."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    while archive.exists():  # two forced rewrites within one microsecond
        archive = archive.with_name(f"{archive.stem}-1.json")
    try:
        os.link(path, archive)
    except OSError:
        atomic_write_text(archive, path.read_text(encoding="utf-8"))


def write_result(
    path: Path, result: dict[str, Any], *, force: bool = False, archive: Path | None = None
) -> None:
    """Store one result atomically at ``path`` (``result_path(...)``).

    An existing result is a :class:`BenchError` unless ``force``; with ``force`` the old file
    is first archived to ``archive`` (default ``superseded_path(path)``:
    ``<results>/runs/<run_id>/superseded/<UTC timestamp>.json``). At every moment ``path``
    holds the old or the new result whole, even if the process is killed.
    """
    path = Path(path)
    # Serialise before touching anything: a result that is not JSON-able must not cost the
    # old one.
    text = json.dumps(result, indent=1) + "\n"
    try:
        tmp = write_temp(path.parent, path.name, lambda handle: handle.write(text.encode()))
    except OSError as err:  # a full disk: the temporary file is gone, ``path`` untouched
        raise ResultWriteError(
            f"cannot write result {path} ({err.strerror or err}); nothing was written: free "
            "space and rerun"
        ) from None
    try:
        if force and path.exists():
            _archive_copy(path, archive or superseded_path(path))
            # Replace in one step: moving the old file away first would leave a moment with
            # no result at ``path`` (a kill there loses it from the leaderboard).
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_result(path: Path) -> dict[str, Any]:
    """Read one result file: with orjson (reading 10,000 results took 0.6 s of CPU against the
    json module's 1.4 s, docs/guarantees.md), and with json where orjson refuses the file —
    NaN, which ``json.dumps`` writes, or a broken file, whose error json names by line and
    column."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _problem(result: Any) -> str | None:
    """Why ``result`` is not a fer-bench result, or None if it is one."""
    if not isinstance(result, dict):
        return "not a JSON object"
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(result["metrics"], dict):
        return "metrics is not an object"
    return None


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result ``<results_dir>/<dataset>/*.json`` (not the ``runs/`` working folders),
    sorted by path. A file that is not a result is skipped with a warning naming it, so one
    bad file cannot stop the leaderboard."""
    with paused_gc():
        return list(iter_results(results_dir))


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection for the block: building 10,000 parsed results, each
    allocation round would rescan all of them (half the time of reading them). Nothing read
    here forms cycles, so nothing is lost by waiting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def iter_results(results_dir: Path) -> Iterator[dict[str, Any]]:
    """:func:`load_results` one at a time: a caller that keeps a few fields of each does not
    hold 10,000 results in memory (nor pay the garbage collector for scanning them)."""
    yield from read_json_files(_result_paths(Path(results_dir)), _problem, "a fer-bench result")


def _result_paths(results_dir: Path) -> list[str]:
    """``<results_dir>/<dataset>/*.json`` sorted, without ``runs/`` and dot-files (strings:
    10,000 ``Path`` objects cost more than reading the list)."""
    paths: list[str] = []
    try:
        folders = [e for e in os.scandir(results_dir) if e.is_dir() and e.name != RUNS_DIR]
    except FileNotFoundError:
        return paths
    for folder in sorted(folders, key=lambda entry: entry.name):  # as Path objects sort
        if folder.name.startswith("."):
            continue
        paths += sorted(
            entry.path
            for entry in os.scandir(folder.path)
            if entry.name.endswith(".json") and not entry.name.startswith(".")
        )
    return paths


def read_json_files(
    paths: Iterable[str | Path], problem: Callable[[Any], str | None], what: str
) -> Iterator[dict[str, Any]]:
    """The JSON files at ``paths`` that ``problem`` finds nothing wrong with, one at a time; a
    file that is not valid JSON, or not ``what``, is skipped with a warning naming it, so one
    bad file cannot stop a listing."""
    for path in paths:
        try:
            result = load_result(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: not valid JSON ({err})", stacklevel=3)
            continue
        if (reason := problem(result)) is not None:
            warnings.warn(f"skipping {path}: not {what} ({reason})", stacklevel=3)
            continue
        yield result


INDEX_NAME = "index.json"  # <results>/runs/index.json: summaries of the results, by file


def result_summaries(
    results_dir: Path,
    summarise: Callable[[dict[str, Any]], dict[str, Any]],
    version: str,
    also: Callable[[str], list[str]] = lambda path: [],
) -> list[dict[str, Any]]:
    """``summarise(result)`` of every result (:func:`iter_results`' files and order), from
    ``<results>/runs/index.json`` where the result file (and the files ``also(path)`` names,
    e.g. its step log) is unchanged since the summary was made (same size and mtime), else from
    the file, read and summarised again; the index is then rewritten (atomically; a folder that
    cannot be written only costs the next reader the same work). ``version`` names the
    summariser: a new one starts a new index. Reading 10,000 results as a few file stats
    instead of 160 MB of JSON is what keeps ``bench status --all`` under two seconds.

    The index is a cache for display: JSON (no code in it runs), and a stale or planted entry
    can only mislabel a row until its result file changes."""
    results_dir = Path(results_dir)
    index_path = results_dir / RUNS_DIR / INDEX_NAME
    try:
        index = json.loads(index_path.read_bytes())
        entries = index["entries"] if index.get("version") == version else {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        entries = {}
    fresh: dict[str, Any] = {}
    summaries = []
    changed = False
    with paused_gc():
        for path in _result_paths(results_dir):
            key = [_stat_key(path), *(_stat_key(other) for other in also(path))]
            name = os.path.relpath(path, results_dir)
            entry = entries.get(name)
            if not (isinstance(entry, dict) and entry.get("key") == key):
                result = next(read_json_files([path], _problem, "a fer-bench result"), None)
                if result is None:
                    continue
                entry, changed = {"key": key, "summary": summarise(result)}, True
            fresh[name] = entry
            summaries.append(entry["summary"])
    if changed or len(fresh) != len(entries):
        with contextlib.suppress(OSError):
            text = json.dumps({"version": version, "entries": fresh}, separators=(",", ":"))
            atomic_write_text(index_path, text)
    return summaries


def _stat_key(path: str) -> list[int] | None:
    """What says a file changed: its size and modification time (None when absent)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]
