"""Writing files safely: the one place the harness replaces, locks and generates files.

- :func:`atomic_write`: a reader sees the old file or the whole new one, never a part, even if
  the writer is killed or the machine loses power (temporary file in the same folder, fsync of
  the file, ``os.replace``, fsync of the folder).
- :func:`locked`: an exclusive lock across processes and hosts. An ``flock`` where the file
  system has one (the kernel drops it when its holder dies); where ``flock`` is refused
  (NFS mounted ``nolock``, Lustre without ``-o flock``), or when ``$FER_BENCH_LOCKS=soft``, a soft
  lock resting on atomic exclusive creation (``filelock.SoftFileLease``): its marker names the
  holder's pid and host, a holder killed on this host is recognised at once, and one killed on
  another host is taken over once its heartbeat has been silent for :data:`LEASE_SECONDS`.
- :func:`generate_once`: a folder generated on first use by one of several processes asking at
  once, published by one rename after its completion marker.

``$FER_BENCH_NO_FLOCK=1`` makes every ``flock`` fail as on a file system without one (a test
switch: the soft lock must then keep every guarantee).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, BinaryIO

from harness.errors import ConfigError, DatasetError

# A soft lock whose holder on another host has not refreshed it for this long is taken over
# (the holder refreshes it every third of that); every process sharing a folder must agree.
LEASE_SECONDS = 120.0
SOFT_SUFFIX = ".soft"
# Marks a generated folder complete; written last, inside the temporary folder.
DONE_MARKER = ".complete"


def _file_mode() -> int:
    """Permissions an ordinary ``open(..., "w")`` would give (mkstemp's are owner-only, which
    would hide results from colleagues sharing the tree)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(directory: Path, name: str, write: Callable[[BinaryIO], object]) -> Path:
    """A fully written, fsynced temporary file in ``directory`` (the target's folder, so the
    final rename is atomic), filled by ``write``; its name is unique across processes and hosts
    and starts with ``.tmp-`` (listings skip it). Removed again if writing fails (a full disk
    leaves no partial file behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{name}-", suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` by what ``write`` puts into the open binary file, atomically and
    durably: readers see the old file or the whole new one, even after a kill or a crash."""
    path = Path(path)
    tmp = write_temp(path.parent, path.name, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write` of bytes."""
    atomic_write(path, lambda handle: handle.write(data))


class LockBusy(Exception):
    """The lock is held by another process (``holder`` describes it)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by {holder}")
        self.holder = holder


def holder_text() -> str:
    """Who this process is, as lock files record it: ``pid N on HOST since TIME``."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}"


def soft_locks_only() -> bool:
    """Whether ``$FER_BENCH_LOCKS=soft`` asks for soft locks everywhere (for file systems
    whose ``flock`` succeeds but is local to one node, e.g. NFS mounted ``local_lock=flock``)."""
    return os.environ.get("FER_BENCH_LOCKS", "").strip().lower() == "soft"


def _flock(fd: int, operation: int) -> None:
    """``fcntl.flock``, or the error a file system without it gives under the test switch."""
    if os.environ.get("FER_BENCH_NO_FLOCK", "") not in ("", "0"):
        raise OSError(errno.ENOLCK, "flock disabled by FER_BENCH_NO_FLOCK")
    fcntl.flock(fd, operation)


@contextlib.contextmanager
def locked(
    path: Path, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the exclusive lock named by ``path`` for the block.

    Busy: with ``wait`` block until it is free (``on_wait(holder)`` is called once first),
    else raise :class:`LockBusy` naming the holder. Uses ``flock`` on ``path`` where the file
    system allows it, else a soft lock whose marker is ``path`` + ``.soft`` (see the module
    docstring). Either way ``path`` names the holder while it is held (:func:`holder_of`) and
    is removed on release, so a released lock leaves no file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flock = not soft_locks_only() and _has_flock(path.parent)
    handle = _flock_handle(path, wait, on_wait) if flock else None
    if handle is None:
        with _soft_locked(path.with_name(path.name + SOFT_SUFFIX), wait, on_wait):
            atomic_write_text(path, holder_text() + "\n")
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
        return
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(holder_text() + "\n")
        handle.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # before unlocking: a waiter re-checks the file
            fcntl.flock(handle, fcntl.LOCK_UN)


_FLOCK_SUPPORT: dict[tuple[int, str], bool] = {}


def _has_flock(directory: Path) -> bool:
    """Whether ``directory``'s file system takes ``flock``, tried once per file system on a
    temporary file of its own. Trying it on the lock file created that file: a process that
    then lost the soft lock to another left it behind, empty, after the holder had removed
    its own (seen as a stray ``lock`` in tests/test_store.py's eight-process race)."""
    key = (os.stat(directory).st_dev, os.environ.get("FER_BENCH_NO_FLOCK", ""))
    if key not in _FLOCK_SUPPORT:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".tmp-flock-probe-")
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _FLOCK_SUPPORT[key] = True
        except OSError:  # ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL: no flock here (none holds it)
            _FLOCK_SUPPORT[key] = False
        finally:
            os.close(fd)
            os.unlink(probe)
    return _FLOCK_SUPPORT[key]


def _flock_handle(path: Path, wait: bool, on_wait: Callable[[str], None] | None) -> IO[str] | None:
    """``path`` opened and ``flock``-ed; None when the file system has no ``flock`` (the
    caller falls back to a soft lock); :class:`LockBusy` when busy and not waiting."""
    while True:
        handle = path.open("a+")
        try:
            try:
                _flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if not wait:
                    raise LockBusy(holder) from None
                if on_wait is not None:
                    on_wait(holder)
                    on_wait = None
                _flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError as err:
            handle.close()
            if isinstance(err, (BlockingIOError, LockBusy)):
                raise
            return None  # ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL: no flock here
        except BaseException:
            handle.close()
            raise
        # The holder before us may have removed the file after we opened it: our lock is then
        # on a file nobody else sees, so start again on the one at ``path``.
        if _same_file(handle, path):
            return handle
        handle.close()


def _same_file(handle: IO[str], path: Path) -> bool:
    """Whether the open ``handle`` is the file now at ``path``."""
    try:
        here = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def holder_of(path: Path) -> str | None:
    """The holder text (:func:`holder_text`) of the lock named by ``path`` when some process
    holds it now, else None; asking never takes the lock from anyone. A soft lock's marker
    counts as held (its holder's liveness is judged by the caller); an ``flock`` file counts
    when its ``flock`` is held, or cannot be probed on this file system."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = None
    soft = path.with_name(path.name + SOFT_SUFFIX)
    if soft.exists():
        return text or _soft_holder(soft)
    if text is None:
        return None
    try:
        with path.open("rb") as handle:
            try:
                _flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return text or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None
    except OSError:  # no flock on this file system: trust the file
        return text or "another process"


def _soft_holder(marker: Path) -> str:
    """The holder a soft lock's marker names (``pid N on HOST``)."""
    try:
        fields = dict(line.split("=", 1) for line in marker.read_text().splitlines() if "=" in line)
    except OSError:
        return "another process"
    if "pid" in fields and "host" in fields:
        return f"pid {fields['pid']} on {fields['host']}"
    return "another process"


@contextlib.contextmanager
def _soft_locked(marker: Path, wait: bool, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    """Hold a soft lock (an exclusively created marker file, refreshed by a heartbeat)."""
    from filelock import SoftFileLease, Timeout  # only where flock is missing

    lease = SoftFileLease(str(marker), lease_duration=LEASE_SECONDS, thread_local=False)
    try:
        lease.acquire(timeout=0, poll_interval=0.05)
    except Timeout:
        holder = _soft_holder(marker)
        if not wait:
            raise LockBusy(holder) from None
        if on_wait is not None:
            on_wait(holder)
        lease.acquire(timeout=-1, poll_interval=0.2)
    try:
        yield
    finally:
        lease.release()


def generate_once(root: Path, write: Callable[[Path], None], marker: str, what: str) -> Path:
    """``root``, written by ``write(folder)`` on first use; ``marker`` is the completion
    marker's text (the generator's settings), ``what`` names the folder in errors.

    Safe when several processes ask at once: under :func:`locked` one generates into a
    temporary sibling folder, writes the completion marker last and renames it into place; the
    others wait for the lock and reuse it. A folder without the marker (a killed generation) is
    replaced. A folder that cannot be written (full disk, no permission) is a
    :class:`DatasetError` and leaves nothing that looks complete.
    """
    root = Path(root)
    if (root / DONE_MARKER).is_file():
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with locked(root.with_name(root.name + ".lock")):
            if (root / DONE_MARKER).is_file():  # another process finished it while we waited
                return root
            # Holding the lock, any temporary sibling is left over from a killed generation.
            for stale in root.parent.glob(f".{root.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = root.with_name(f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}")
            try:
                write(tmp)
                atomic_write_text(tmp / DONE_MARKER, marker + "\n")
                shutil.rmtree(root, ignore_errors=True)  # an unfinished folder, killed
                os.replace(tmp, root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(root.parent)
    except OSError as err:
        raise DatasetError(
            f"{what}: cannot generate into the cache folder {root.parent} ({err}); set "
            "data.cache_dir or $FER_BENCH_CACHE to a writable folder with free space"
        ) from err
    return root


# A name that becomes a file or folder name as it is (a dataset's results folder, a cache file):
# letters, digits and _ . + = , - only, not starting with a dot (no hidden files, no "..").
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,-]*")


def check_plain_name(value: object, what: str) -> str:
    """``value`` if it is safe as a file or folder name on its own (see ``_PLAIN_NAME``),
    else a :class:`ConfigError` naming ``what`` and the rule."""
    text = str(value)
    if not _PLAIN_NAME.fullmatch(text) or ".." in text:
        raise ConfigError(
            f"{what}={text!r} cannot name a file or folder: use letters, digits and _ . + = , - "
            "(not starting with '.', no '..', no '/')"
        )
    return text


def check_free_text(value: object, what: str) -> str:
    """``value`` if it is free text that may end up in a file name once made safe (a tag, a
    method variant's label): no path separators, no '..', no control characters, not
    starting with '.'; else a :class:`ConfigError` naming ``what``."""
    text = str(value)
    bad = (
        "/" in text
        or "\\" in text
        or ".." in text
        or text.startswith(".")
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
    )
    if bad:
        raise ConfigError(
            f"{what}={text!r} may not contain '/', '\\', '..' or control characters, nor start "
            "with '.' (it ends up in file names)"
        )
    return text
