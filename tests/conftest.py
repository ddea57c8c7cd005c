"""Shared fixtures: a tiny built-in dataset and the overrides that make training tests fast."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plugin_package import plugin_site as _plugin_site

# Tests never write into the user's cache.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session (synthfer is generated once)."""
    path = tmp_path_factory.mktemp("fer-bench-cache")
    os.environ["FER_BENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> list[str]:
    """Overrides for a tiny synthfer run: 280 train / 140 test faces at 32 px, 40 steps."""
    return [
        "dataset.generate.train_size=280",
        "dataset.generate.test_size=140",
        "dataset.generate.image_size=48",
        "data.image_size=32",
        "data.batch_size=16",
        "data.unlabelled_ratio=2",
        "data.num_workers=0",
        "data.eval_batch_size=70",
        f"data.cache_dir={cache_dir}",
        "train.steps=40",
        "train.eval_every=20",
        "train.checkpoint_every=10",
        "train.log_every=5",
        "ema.decay=0.9",
        # One thread: faster for tiny models on 2 cores, and CPU results depend on the count.
        "train.threads=1",
    ]


@pytest.fixture(scope="session")
def separable_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset (train/ and test/, one folder per class) of three classes of 24×24
    JPEGs: a bright band at the top, middle or bottom (unchanged by the weak view's horizontal
    flips) under noise; 60 train and 30 test images a class. Learnable in a few dozen steps, so
    a model that does not reach high accuracy on it did not learn."""
    root = tmp_path_factory.mktemp("separable")
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("test", 30)):
        for cls, rows in enumerate([slice(0, 6), slice(9, 15), slice(18, 24)]):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 90, (24, 24, 3)).astype(np.uint8)
                image[rows, 4:20] = 230
                Image.fromarray(image).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="session")
def plugin_site() -> Path:
    """A folder holding the method plugin ``entmin`` from another package, installed as pip
    would (tests/plugin_package.py): put it on PYTHONPATH to have it found."""
    return _plugin_site()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu``, in any file, skip with the reason when no CUDA device is visible
    (so a CPU machine runs the whole suite without them, and ``-m gpu`` says why)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run scripts/gpu_check.sh on a GPU node")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs) for full-disk tests; skipped where this process may
    not mount one (not root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs a small tmpfs (mount as root); the injected-ENOSPC tests still run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
