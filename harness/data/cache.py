"""The decoded uint8 cache: every face of a split decoded once into a memory-mapped array.

Decoding ~290k AffectNet JPEGs every epoch would starve any GPU, so each split is decoded once,
at the training resolution, into ``<cache>/<key>-<size>px-<fingerprint>.npy``. The fingerprint
hashes the file list and boxes, so a changed dataset rebuilds. Building is safe when several
jobs start at once: a file lock lets one build (into a temporary file, renamed when complete)
while the others wait and then map the finished file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.progress import Progress

from harness.data.images import load_face
from harness.data.table import ImageTable

CHUNK = 256


def table_fingerprint(table: ImageTable, size: int) -> str:
    """Hash of the paths, boxes and size that a cache file holds."""
    digest = hashlib.sha256(f"{size}\n".encode())
    for path in table.paths:
        digest.update(str(path).encode() + b"\n")
    if table.boxes is not None:
        digest.update(np.ascontiguousarray(table.boxes, dtype=np.int64).tobytes())
    return digest.hexdigest()[:12]


def _decode_chunk(args: tuple[ImageTable, int, int, int]) -> tuple[int, np.ndarray]:
    table, start, stop, size = args
    out = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    for i in range(start, stop):
        box = None if table.boxes is None else table.boxes[i]
        out[i - start] = load_face(table.paths[i], box, size)
    return start, out


def decoded_images(
    table: ImageTable,
    size: int,
    cache_dir: Path,
    key: str,
    workers: int = 2,
    progress: bool = True,
) -> np.ndarray:
    """Read-only (N, size, size, 3) uint8 array of the split's faces, built on first use."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{key}-{size}px-{table_fingerprint(table, size)}.npy"
    if not final.exists():
        with (cache_dir / f"{final.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not final.exists():  # another job may have built it while we waited
                _build(table, size, final, workers, progress)
    return np.load(final, mmap_mode="r")


def _build(table: ImageTable, size: int, final: Path, workers: int, progress: bool) -> None:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(table), size, size, 3)
        )
        jobs = [(table, s, min(s + CHUNK, len(table)), size) for s in range(0, len(table), CHUNK)]
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"decoding {final.stem}", total=len(table))
            if workers > 1 and len(jobs) > 1:
                with ProcessPoolExecutor(workers) as pool:
                    for start, block in pool.map(_decode_chunk, jobs):
                        array[start : start + len(block)] = block
                        bar.advance(task, len(block))
            else:
                for job in jobs:
                    start, block = _decode_chunk(job)
                    array[start : start + len(block)] = block
                    bar.advance(task, len(block))
        array.flush()
        del array
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
