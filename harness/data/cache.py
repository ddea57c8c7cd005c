"""The decoded uint8 cache: every face of a split decoded once into a memory-mapped array.

Decoding ~290k AffectNet JPEGs every epoch would starve any GPU, so each split is decoded once,
at the training resolution, into ``<cache_dir>/<key>-<size>px-<fingerprint>.npy``. The
fingerprint hashes the file list, the face boxes, the size and the decoder version, so a changed
dataset gets a new file (image *contents* are not hashed: edit files in place and delete the
cache yourself).

Building is safe when several jobs start at once: a lock on ``.<name>.lock``
(:func:`harness.files.locked`: ``flock``, or a soft lock where there is none) lets one build while
the others wait and then map the finished file. The builder writes a temporary
``.npy`` next to the final one and renames it when complete, so a reader never sees a half-built
cache; a temporary file left by a killed builder is deleted by the next one (whoever holds the
lock is the only live builder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.images import DECODE_VERSION, load_face
from harness.data.table import ImageTable
from harness.errors import ConfigError
from harness.files import atomic_write_text, fsync_dir, locked
from harness.interrupts import ctrl_c_held
from harness.progress import counted

CHUNK = 256  # images per task sent to a decoding process
HEADROOM = 256 * 2**20  # free bytes to leave on the cache disk beyond the array itself
CHECK_SUFFIX = ".check"
FULL_CHECK_BYTES = 64 * 2**20  # files up to this size are checksummed whole at every open
SAMPLED_BLOCKS, BLOCK_BYTES = 64, 64 * 2**10  # larger ones: this many blocks of this size


def table_fingerprint(table: ImageTable, size: int) -> str:
    """Hash of what a cache file holds: paths, boxes, size and decoder version."""
    digest = hashlib.sha256(f"fer-bench cache v{DECODE_VERSION}\n{size}\n".encode())
    for path in table.paths:
        digest.update(str(path).encode() + b"\n")
    if table.boxes is None:
        digest.update(b"no boxes")
    else:
        digest.update(np.ascontiguousarray(table.boxes, dtype=np.int64).tobytes())
    return digest.hexdigest()[:12]


def cache_path(table: ImageTable, size: int, cache_dir: Path, key: str) -> Path:
    """Where :func:`decoded_images` keeps the split's array."""
    return Path(cache_dir) / f"{key}-{size}px-{table_fingerprint(table, size)}.npy"


class MappedImages(Sequence[np.ndarray]):
    """A finished cache file's (N, size, size, 3) uint8 faces, memory-mapped read-only.

    Pickles as its path: a process it is sent to (a spawned DataLoader worker, a parallel
    grid's worker) maps the same file. A plain ``np.memmap`` pickles every image it maps, so
    each such worker would get its own copy, 1.8 GB of them for RAF-DB's training set at 224 px.
    """

    def __init__(self, path: Path, array: np.ndarray) -> None:
        self.path, self._array = Path(path), array

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, index: Any) -> np.ndarray:  # type: ignore[override]
        return self._array[index]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # np.array(..., copy=None) needs numpy 2; this works on 1.x too.
        return np.array(self._array, dtype=dtype) if copy else np.asarray(self._array, dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, size, size, 3)."""
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        """uint8."""
        return self._array.dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return _remap, (self.path, self.shape)


def _remap(path: Path, shape: tuple[int, ...]) -> MappedImages:
    """Unpickle a :class:`MappedImages`: map its file again."""
    images = _open_if_valid(path, shape)
    if images is None:
        raise ConfigError(f"decoded-image cache {path} changed or vanished while in use")
    return images


def decoded_images(
    table: ImageTable,
    size: int,
    cache_dir: Path,
    key: str,
    workers: int = 2,
    progress: bool = True,
) -> Sequence[np.ndarray]:
    """The split's faces, a read-only memory-mapped (N, size, size, 3) uint8 sequence
    (:class:`MappedImages`; indexing gives numpy arrays).

    Built on first use with ``workers`` decoding processes (1: in this process) and reused
    afterwards. An unreadable image raises :class:`DatasetError` naming it, and no cache file
    is left behind.
    """
    shape = (len(table), size, size, 3)
    if len(table) == 0:
        empty = np.empty(shape, dtype=np.uint8)
        empty.flags.writeable = False
        return empty
    final = cache_path(table, size, cache_dir, key)
    cached = _open_if_valid(final, shape)
    if cached is not None:
        return cached
    with build_lock(final, progress, what="the decoded-image cache", or_else="data.cache=false"):
        # Another job may have built it while this one waited for the lock.
        cached = _open_if_valid(final, shape)
        if cached is None:
            final.unlink(missing_ok=True)  # an unusable file (wrong shape, bad header)
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                stale.unlink(missing_ok=True)  # left by a killed builder: we hold the lock
            _check_space(final.parent, shape)
            try:
                _build(table, size, final, workers, progress)
            except OSError as err:  # a full disk: _build removed its temporary file
                raise ConfigError(
                    f"cannot write the decoded-image cache {final} ({err.strerror or err}); "
                    "free space and rerun, set data.cache_dir (or $FER_BENCH_CACHE) to a larger "
                    "disk, or data.cache=false"
                ) from None
            cached = _open_if_valid(final, shape)
    if cached is None:  # pragma: no cover - _build either succeeds or raises
        raise RuntimeError(f"cache {final} was not built")
    return cached


@contextlib.contextmanager
def build_lock(
    final: Path, progress: bool = True, what: str = "a cached file", or_else: str = ""
) -> Iterator[None]:
    """Hold the exclusive lock (``.<name>.lock`` beside it) under which one process builds the
    file ``final`` while others wait for it: the lock :func:`decoded_images` takes, and other
    cached artefacts (pretrained weights) that several jobs may ask for at once. A folder that
    cannot be written is a :class:`ConfigError` naming ``what`` and the keys that move it
    (``or_else``: another way out, e.g. ``data.cache=false``). Where the file system has no
    ``flock`` the lock is a soft one (:func:`harness.files.locked`)."""

    def waiting(holder: str) -> None:
        if progress:
            print(f"waiting for {holder} to finish building {final.name} ...", file=sys.stderr)

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(final.parent / f".{final.name}.lock", on_wait=waiting))
        except OSError as err:
            alternative = f", or {or_else}" if or_else else ""
            raise ConfigError(
                f"cannot write {what} in {final.parent} ({err}); "
                f"set data.cache_dir (or $FER_BENCH_CACHE) to a writable folder{alternative}"
            ) from None
        yield


def _open_if_valid(final: Path, shape: tuple[int, ...]) -> MappedImages | None:
    """The finished cache file mapped read-only, or None if absent, not the expected array, or
    not the bytes its checksum file recorded (truncated or corrupt: it is then rebuilt)."""
    try:
        array = np.load(final, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError):
        return None
    if array.shape != shape or array.dtype != np.uint8:
        return None
    recorded = _read_check(final)
    # No checksum file: a cache built before they existed, accepted as it was then.
    if recorded is not None and recorded != content_check(final):
        return None
    return MappedImages(final, array)


def check_path(final: Path) -> Path:
    """The checksum file of the cache file ``final``: ``.<name>.check`` beside it."""
    return final.with_name(f".{final.name}{CHECK_SUFFIX}")


def content_check(path: Path) -> dict[str, Any]:
    """The size and a BLAKE2 digest of the file at ``path``: of every byte up to
    :data:`FULL_CHECK_BYTES`, above that of the header, the tail and
    :data:`SAMPLED_BLOCKS` evenly spaced blocks (a truncated file, or a lost or zeroed stretch
    of one, is caught without reading gigabytes at every start)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as handle:
        if size <= FULL_CHECK_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            stride = (size - BLOCK_BYTES) // (SAMPLED_BLOCKS + 1)
            inner = [stride * (i + 1) for i in range(SAMPLED_BLOCKS)]
            for offset in [0, *inner, size - BLOCK_BYTES]:
                handle.seek(offset)
                digest.update(handle.read(BLOCK_BYTES))
    return {"bytes": size, "blake2b": digest.hexdigest(), "sampled": size > FULL_CHECK_BYTES}


def _read_check(final: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads(check_path(final).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _check_space(folder: Path, shape: tuple[int, ...]) -> None:
    # The memmap is sparse: without this check a full disk shows up as SIGBUS mid-build.
    need = int(np.prod(shape)) + HEADROOM
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ConfigError(
            f"not enough space for the decoded-image cache in {folder}: it needs "
            f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are free; set data.cache_dir "
            "(or $FER_BENCH_CACHE) to a larger disk, lower data.image_size, or data.cache=false"
        )


def _decode_into(
    target: Path,
    start: int,
    paths: tuple[Path, ...],
    boxes: np.ndarray | None,
    size: int,
    wheres: tuple[str | None, ...] = (),
) -> int:
    """Decode ``paths`` into rows ``start..`` of the ``.npy`` at ``target``; returns the count.

    Runs in the decoding processes: each writes its rows straight into the shared file, so no
    pixels travel back through a pipe.
    """
    array = np.load(target, mmap_mode="r+")
    for i, path in enumerate(paths):
        box = None if boxes is None else boxes[i]
        array[start + i] = load_face(path, box, size, wheres[i] if wheres else None)
    array.flush()
    return len(paths)


def _build(table: ImageTable, size: int, final: Path, workers: int, progress: bool) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        header = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(table), size, size, 3)
        )
        del header  # the header is written; processes map the file themselves
        chunk = max(1, min(CHUNK, -(-len(table) // (4 * max(1, workers)))))
        jobs = [
            (
                tmp,
                start,
                table.paths[start : start + chunk],
                None if table.boxes is None else table.boxes[start : start + chunk],
                size,
                tuple(table.box_origin(i) for i in range(start, min(start + chunk, len(table)))),
            )
            for start in range(0, len(table), chunk)
        ]
        with counted(
            f"decoding {final.stem} into the cache", len(table), enabled=progress
        ) as advance:
            if workers <= 1 or len(jobs) == 1:
                for job in jobs:
                    advance(_decode_into(*job))
            else:
                for done in _run_pool(jobs, workers):
                    advance(done)
        with tmp.open("rb+") as handle:  # the decoders' pages on disk before the rename
            os.fsync(handle.fileno())
        # The checksum first: a crash before the rename leaves a checksum without its file.
        atomic_write_text(check_path(final), json.dumps(content_check(tmp)) + "\n")
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _run_pool(jobs: list[tuple], workers: int) -> Iterator[int]:
    """Run the decode jobs in ``workers`` fresh processes, a bounded number queued at a time;
    yields each job's image count. The first failure cancels the rest and is re-raised."""
    # spawn, not fork: the caller may hold CUDA contexts and torch threads.
    context = multiprocessing.get_context("spawn")
    pending: set[Future[int]] = set()
    queue = iter(jobs)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            for job in queue:
                with ctrl_c_held():  # a submit may start a process
                    pending.add(pool.submit(_decode_into, *job))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
