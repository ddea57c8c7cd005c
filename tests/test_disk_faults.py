"""Full disks and damaged files (issue 24 §4): a checkpoint, a result, the step log and the
decoded cache written on a real, full file system (a 1 MiB tmpfs) fail with one clear line,
leave nothing partial that a reader would take for whole, and work again once space is freed;
damaged cache files are rebuilt. Where no tmpfs can be mounted, injected ENOSPC stands in."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.checkpoint import CheckpointWriteError, TrainState, read_checkpoint, resume
from harness.data.cache import cache_path, check_path, decoded_images
from harness.data.images import LazyImages
from harness.data.table import ImageTable
from harness.errors import ConfigError
from harness.steplog import StepLogWriteError, open_step_log, training_steps
from harness.store import ResultWriteError, load_results, write_result

SIZE = 8


def fill_disk(folder: Path, leave: int) -> Path:
    """A file in ``folder`` that leaves about ``leave`` bytes free on its file system."""
    filler = folder / "filler"
    with filler.open("wb") as handle:
        while shutil.disk_usage(folder).free > leave + 4096:
            handle.write(b"\0" * 4096)
            handle.flush()
    return filler


def _state(step: int) -> TrainState:
    return TrainState(step=step, config_hash="h", weights=torch.full((40_000,), float(step)))


def _no_partial_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".tmp-*")]


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(small_disk: Path) -> None:
    path = small_disk / "run" / "checkpoint.pt"
    _state(10).save(path)
    filler = fill_disk(small_disk, leave=60_000)  # less than one checkpoint (160 kB)
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*No space left"):
        _state(20).save(path)
    assert not _no_partial_files(small_disk)
    assert read_checkpoint(path)["step"] == 10, "the last checkpoint is whole"
    filler.unlink()  # space freed: the run saves and resumes again
    _state(20).save(path)
    state = _state(-1)
    assert resume(state, path, torch.device("cpu"), print) and state["step"] == 20


def test_an_injected_enospc_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same fault without a small file system (CI without root): NFS reports a full disk
    # as late as fsync.
    path = tmp_path / "checkpoint.pt"
    _state(10).save(path)

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        _state(20).save(path)
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 10 and not _no_partial_files(tmp_path)


def _result(blob: int) -> dict:
    return {"dataset": "synthfer", "method_label": "m", "labels": "10%", "seed": 0,
            "metrics": {"top1": 1.0}, "blob": "x" * blob}  # fmt: skip


def test_a_full_disk_while_writing_a_result_leaves_nothing(small_disk: Path) -> None:
    path = small_disk / "results" / "synthfer" / "r.json"
    path.parent.mkdir(parents=True)
    filler = fill_disk(small_disk, leave=50_000)
    with pytest.raises(ResultWriteError, match=r"cannot write result .*r\.json .*No space left"):
        write_result(path, _result(300_000))
    assert not path.exists() and not list(path.parent.iterdir()), "no partial file"
    assert load_results(small_disk / "results") == []
    filler.unlink()
    write_result(path, _result(300_000))
    assert len(load_results(small_disk / "results")[0]["blob"]) == 300_000


def test_a_full_disk_while_logging_loses_no_whole_record(small_disk: Path) -> None:
    path = small_disk / "run" / "metrics.jsonl"
    path.parent.mkdir()
    filler = fill_disk(small_disk, leave=30_000)
    log = open_step_log(path, tensorboard=False)
    written = 0
    with pytest.raises(StepLogWriteError, match=r"cannot write the step log .*No space left"):
        for step in range(100_000):
            log.write(json.dumps({"step": step, "loss": 1.0, "pad": "y" * 200}) + "\n")
            written = step
    with pytest.raises(StepLogWriteError):  # the buffered rest cannot be flushed either
        log.close()
    steps = training_steps(path)
    assert steps and steps[-1]["step"] <= written, "a partial last line is not a record"
    filler.unlink()
    log = open_step_log(path, tensorboard=False)  # the resumed run appends after it
    log.write(json.dumps({"step": written + 1, "loss": 2.0}) + "\n")
    log.close()
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines), "every line whole after the resume"
    assert json.loads(lines[-1])["step"] == written + 1


def _table(folder: Path, n: int = 6) -> ImageTable:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return ImageTable(tuple(folder / f"{i}.jpg" for i in range(n)), np.arange(n) % 3, None)


def _expected(table: ImageTable) -> np.ndarray:
    return np.stack([LazyImages(table, SIZE)[i] for i in range(len(table))])


def test_a_full_disk_while_building_the_cache_leaves_no_cache(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.data.cache as cache

    table = _table(tmp_path / "img")
    monkeypatch.setattr(cache, "HEADROOM", 0)  # let the build start on the nearly full disk
    filler = fill_disk(small_disk, leave=16_384)
    big = ImageTable(table.paths * 60, np.zeros(len(table) * 60, dtype=np.int64), None)
    with pytest.raises(ConfigError, match="decoded-image cache"):
        decoded_images(big, 32, small_disk / "cache", "t", workers=1, progress=False)
    assert not list((small_disk / "cache").glob("*.npy")) and not list(
        (small_disk / "cache").glob(".*tmp*")
    )
    filler.unlink()
    images = decoded_images(table, SIZE, small_disk / "cache", "t", workers=1, progress=False)
    assert np.array_equal(np.asarray(images), _expected(table))


@pytest.mark.parametrize("damage", ["truncate", "flip", "zero"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(damage: str, tmp_path: Path) -> None:
    table, cache = _table(tmp_path / "img"), tmp_path / "cache"
    decoded_images(table, SIZE, cache, "t", workers=1, progress=False)
    final = cache_path(table, SIZE, cache, "t")
    assert check_path(final).is_file()
    data = bytearray(final.read_bytes())
    if damage == "truncate":
        del data[-100:]
    elif damage == "flip":  # one pixel: still a valid .npy of the right shape
        data[-50] ^= 0xFF
    else:  # a stretch lost in a crash reads back as zeros
        data[-300:] = bytes(300)
    final.write_bytes(bytes(data))
    images = decoded_images(table, SIZE, cache, "t", workers=1, progress=False)
    assert np.array_equal(np.asarray(images), _expected(table)), "rebuilt, not read as images"
