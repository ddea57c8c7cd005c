"""The decoded uint8 cache: same pixels as direct decoding, built once, safe under concurrency."""

from __future__ import annotations

import fcntl
import multiprocessing
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import cache as cache_module
from harness.data.cache import cache_path, decoded_images, table_fingerprint
from harness.data.images import LazyImages
from harness.data.table import ImageTable
from harness.errors import ConfigError, DatasetError

SIZE = 8


def make_table(folder: Path, n: int = 6, boxes: bool = False) -> ImageTable:
    """``n`` real JPEGs of distinct content (a noise image per index), 14×12 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
        paths.append(folder / f"{i}.jpg")
    box_rows = np.tile([2, 1, 9, 8], (n, 1)) if boxes else None
    if box_rows is not None:
        box_rows[0] = -1  # this one is not cropped
    return ImageTable(tuple(paths), np.arange(n) % 3, box_rows)


def build(table: ImageTable, cache: Path, workers: int = 1, key: str = "t") -> np.ndarray:
    return decoded_images(table, SIZE, cache, key, workers=workers, progress=False)


def test_cache_equals_direct_decoding_and_is_read_only(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img", boxes=True)
    cached = build(table, tmp_path / "cache")
    assert cached.shape == (6, SIZE, SIZE, 3) and cached.dtype == np.uint8
    lazy = LazyImages(table, SIZE)
    assert all(np.array_equal(cached[i], lazy[i]) for i in range(len(table)))
    assert not cached[0].flags.writeable
    with pytest.raises(ValueError):
        cached[0][0, 0, 0] = 1
    (only,) = (tmp_path / "cache").glob("*.npy")
    assert only.name == f"t-{SIZE}px-{table_fingerprint(table, SIZE)}.npy"
    assert only == cache_path(table, SIZE, tmp_path / "cache", "t")


def test_pool_of_decoding_processes_gives_the_same_array(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img", n=9, boxes=True)
    alone = np.array(build(table, tmp_path / "one", workers=1))
    pooled = np.array(build(table, tmp_path / "two", workers=2))
    assert np.array_equal(alone, pooled)


def test_second_call_reuses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_table(tmp_path / "img")
    first = np.array(build(table, tmp_path / "cache"))
    (cached,) = (tmp_path / "cache").glob("*.npy")
    before = cached.stat()

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(cache_module, "_build", no_rebuild)
    again = build(table, tmp_path / "cache")
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert np.array_equal(first, again)


def test_changed_table_or_size_gets_its_own_file(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img", boxes=True)
    cache = tmp_path / "cache"
    build(table, cache)
    fewer = ImageTable(table.paths[:5], table.labels[:5], table.boxes[:5])
    assert len(build(fewer, cache)) == 5
    moved = table.boxes.copy()
    moved[3] = [0, 0, 5, 5]
    build(ImageTable(table.paths, table.labels, moved), cache)
    no_boxes = ImageTable(table.paths, table.labels)
    build(no_boxes, cache)
    assert decoded_images(table, 4, cache, "t", workers=1, progress=False).shape == (6, 4, 4, 3)
    assert len(list(cache.glob("t-*.npy"))) == 5


def test_unusable_file_and_stale_temp_file_are_replaced(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img")
    cache = tmp_path / "cache"
    final = cache_path(table, SIZE, cache, "t")
    cache.mkdir()
    np.save(final, np.zeros((2, SIZE, SIZE, 3), np.uint8))  # wrong shape, e.g. a hash clash
    stale = cache / f".{final.name}.tmp-999999"
    stale.write_bytes(b"half-written by a killed job")
    cached = build(table, cache)
    assert cached.shape == (6, SIZE, SIZE, 3)
    assert np.array_equal(cached[4], LazyImages(table, SIZE)[4])
    assert not stale.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_is_named_and_leaves_no_cache(tmp_path: Path, workers: int) -> None:
    table = make_table(tmp_path / "img", n=8)
    table.paths[5].write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot decode image .*img/5\.jpg"):
        build(table, tmp_path / "cache", workers=workers)
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_empty_table_gives_an_empty_array(tmp_path: Path) -> None:
    empty = build(ImageTable((), np.zeros(0, np.int64)), tmp_path / "cache")
    assert empty.shape == (0, SIZE, SIZE, 3) and empty.dtype == np.uint8


def test_unwritable_cache_dir_and_full_disk_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = make_table(tmp_path / "img", n=2)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot write the decoded-image cache in .*a-file"):
        build(table, tmp_path / "a-file" / "cache")

    class Usage:
        free = 1000

    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(ConfigError, match=r"not enough space .* GiB are free"):
        build(table, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))


def _build_in_child(args: tuple[ImageTable, Path]) -> bytes:
    table, cache = args
    return np.array(build(table, cache, key="race")).tobytes()


def test_two_processes_building_at_once_make_one_correct_file(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img", n=30)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_build_in_child, [(table, tmp_path / "cache")] * 2)
    expected = np.stack([LazyImages(table, SIZE)[i] for i in range(len(table))]).tobytes()
    assert results == [expected, expected]
    assert [p.name for p in (tmp_path / "cache").glob("*.npy")] == [
        cache_path(table, SIZE, tmp_path / "cache", "race").name
    ]
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_a_second_job_waits_for_the_builder_then_reuses_its_file(tmp_path: Path) -> None:
    table = make_table(tmp_path / "img", n=4)
    cache = tmp_path / "cache"
    final = cache_path(table, SIZE, cache, "race")
    cache.mkdir()
    context = multiprocessing.get_context("fork")
    with (cache / f".{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this test plays the builder
        waiter = context.Process(target=_build_in_child, args=((table, cache),))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive(), "the second job must wait for the lock"
        # Finish "building": the real array, under the final name.
        np.save(final, np.stack([LazyImages(table, SIZE)[i] for i in range(4)]))
        built = final.stat().st_mtime_ns
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=20)
    assert waiter.exitcode == 0
    assert final.stat().st_mtime_ns == built  # reused, not rebuilt


def test_file_system_without_locks_builds_under_a_soft_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lustre/NFS mounts without lock support answer flock with ENOLCK (the test switch below
    # does the same): the build falls back to a soft lock and still happens once.
    table = make_table(tmp_path / "img", n=2)
    monkeypatch.setenv("FER_BENCH_NO_FLOCK", "1")
    images = build(table, tmp_path / "cache")
    assert len(images) == 2
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert not list((tmp_path / "cache").glob("*.soft")), "the soft lock is released"


def _rows_in_spawned_process(images: object) -> bytes:
    return np.array(images).tobytes()


def test_a_cached_split_travels_to_another_process_as_its_path(tmp_path: Path) -> None:
    """A spawned worker (a DataLoader worker of a parallel grid) maps the file itself; it is
    not sent a copy of every image, as a pickled np.memmap would be."""
    table = make_table(tmp_path / "img", n=200)
    cached = build(table, tmp_path / "cache")
    pixels = np.array(cached).tobytes()
    assert len(pixels) == 200 * SIZE * SIZE * 3
    assert len(pickle.dumps(cached)) < 1000
    assert len(pickle.dumps(np.load(cached.path, mmap_mode="r"))) > len(pixels)  # the old way
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_rows_in_spawned_process, (cached,)) == pixels
    restored = pickle.loads(pickle.dumps(cached))
    assert np.array_equal(restored[7], cached[7]) and not restored[7].flags.writeable

    cached.path.unlink()  # a cache deleted under a running job: say so, never read garbage
    with pytest.raises(ConfigError, match=r"cache .*\.npy changed or vanished while in use"):
        pickle.loads(pickle.dumps(cached))
