"""synthfer: RAF-DB's exact layout, determinism, class balance, geometry, safe generation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.config import config_dir
from harness.data.rafdb import load_rafdb
from harness.data.synthfer import (
    CLASS_GEOMETRY,
    RAFDB_TRAIN_COUNTS,
    SynthConfig,
    ensure_synthfer,
    generate_synthfer,
    render_face,
    split_labels,
    split_names,
)
from harness.errors import ConfigError, DatasetError
from harness.files import DONE_MARKER

REPO = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(train_size=70, test_size=21, image_size=32, seed=7)
# synthfer's sizes and seed as configs/dataset/synthfer.yaml sets them (SynthConfig has no default)
YAML_SIZES = yaml.safe_load((config_dir() / "dataset" / "synthfer.yaml").read_text())["dataset"][
    "generate"
]
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGES = Path("Image") / "aligned"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthfer")
    generate_synthfer(root, SMALL, workers=1)
    return root


def test_layout_and_names_are_rafdb_official(small_root: Path) -> None:
    lines = (small_root / LABEL_FILE).read_text().splitlines()
    names = [line.split()[0] for line in lines]
    expected = [f"train_{i:05d}.jpg" for i in range(1, 71)] + [
        f"test_{i:05d}.jpg" for i in range(1, 22)
    ]
    assert names == expected
    assert all(re.fullmatch(r"(train|test)_\d{5}\.jpg [1-7]", line) for line in lines)
    on_disk = sorted(p.name for p in (small_root / IMAGES).iterdir())
    assert on_disk == sorted(n.replace(".jpg", "_aligned.jpg") for n in names)
    for split in ("train", "test"):
        labels = {int(line[-1]) for line in lines if line.startswith(split)}
        assert labels == set(range(1, 8)), f"{split} lacks a class"


def test_rafdb_loader_reads_it_back(small_root: Path) -> None:
    ds = load_rafdb(small_root)
    assert (len(ds.train), len(ds.test)) == (70, 21)
    lines = (small_root / LABEL_FILE).read_text().splitlines()
    assert ds.train.labels.tolist() == [int(line.split()[1]) - 1 for line in lines[:70]]
    assert ds.test.paths[0].name == "test_00001_aligned.jpg"


def test_every_image_is_an_rgb_jpeg_of_the_configured_size(small_root: Path) -> None:
    paths = sorted((small_root / IMAGES).iterdir())
    assert len(paths) == 91
    for path in paths:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32)), path
            image.load()


def test_names_widen_past_five_digits() -> None:
    assert split_names("test", 3) == ["test_00001", "test_00002", "test_00003"]
    wide = split_names("train", 123_456)
    assert (wide[0], wide[-1]) == ("train_000001", "train_123456")


def test_same_config_gives_identical_files_whatever_the_workers(
    small_root: Path, tmp_path: Path
) -> None:
    generate_synthfer(tmp_path, SMALL, workers=2)
    assert (tmp_path / LABEL_FILE).read_bytes() == (small_root / LABEL_FILE).read_bytes()
    for path in sorted((small_root / IMAGES).iterdir()):
        assert np.array_equal(_pixels(path), _pixels(tmp_path / IMAGES / path.name)), path.name


def test_another_seed_gives_other_images(small_root: Path, tmp_path: Path) -> None:
    other = SynthConfig(train_size=70, test_size=21, image_size=32, seed=8)
    generate_synthfer(tmp_path, other, workers=1)
    name = IMAGES / "train_00001_aligned.jpg"
    assert not np.array_equal(_pixels(small_root / name), _pixels(tmp_path / name))
    assert other.fingerprint() != SMALL.fingerprint()


def test_class_imbalance_follows_rafdb() -> None:
    proportions = np.array(RAFDB_TRAIN_COUNTS) / sum(RAFDB_TRAIN_COUNTS)
    for split, size in (("train", 6000), ("test", 1500)):
        counts = np.bincount(split_labels(size, 1234, split), minlength=7)
        assert counts.sum() == size
        assert np.abs(counts - proportions * size).max() <= 2, (split, counts)
    # RAF-DB's own size reproduces RAF-DB's own counts.
    assert np.bincount(split_labels(12271, 0, "train")).tolist() == list(RAFDB_TRAIN_COUNTS)
    # Shuffled, not sorted by class; and still every class in a tiny split.
    assert not np.all(np.diff(split_labels(1500, 0, "test")) >= 0)
    assert set(split_labels(7, 0, "test").tolist()) == set(range(7))


def test_expressions_change_the_face_not_the_background() -> None:
    """Same identity and nuisances, seven expressions: seven faces that differ inside the face."""
    config = SynthConfig(**{**YAML_SIZES, "image_size": 64})
    for seed in range(3):
        faces = [
            np.asarray(
                render_face(CLASS_GEOMETRY[c], np.random.default_rng([seed]), config), np.float64
            )
            for c in range(7)
        ]
        again = render_face(CLASS_GEOMETRY[3], np.random.default_rng([seed]), config)
        assert np.array_equal(np.asarray(again), faces[3].astype(np.uint8))
        for a in range(7):
            for b in range(a + 1, 7):
                gap = np.abs(faces[a] - faces[b])
                assert gap.mean() > 0.3, (seed, a, b)  # the expressions differ...
                corners = [gap[:6, :6], gap[:6, -6:], gap[-6:, :6], gap[-6:, -6:]]
                assert max(c.max() for c in corners) == 0  # ...while the background does not


def test_class_mean_images_differ(tmp_path: Path) -> None:
    config = SynthConfig(train_size=140, test_size=7, image_size=32, seed=3, occlusion_prob=0.0)
    generate_synthfer(tmp_path, config, workers=1)
    ds = load_rafdb(tmp_path)
    images = np.stack([_pixels(p).astype(np.float64) for p in ds.train.paths])
    means = np.stack([images[ds.train.labels == c].mean(0) for c in range(7)])
    gaps = [np.abs(means[a] - means[b]).mean() for a in range(7) for b in range(a + 1, 7)]
    assert min(gaps) > 0.5


def test_config_is_validated_and_yaml_lists_hash_like_tuples() -> None:
    with pytest.raises(ConfigError, match="train_size"):
        SynthConfig(**{**YAML_SIZES, "train_size": 3})
    with pytest.raises(ConfigError, match="occlusion_prob"):
        SynthConfig(**YAML_SIZES, occlusion_prob=1.5)
    with pytest.raises(ConfigError, match="scale_range"):
        SynthConfig(**YAML_SIZES, scale_range=(1.2, 0.8))
    from_yaml = SynthConfig(**YAML_SIZES, scale_range=[0.85, 1.1])  # type: ignore[arg-type]
    assert from_yaml.fingerprint() == SynthConfig(**YAML_SIZES).fingerprint()
    changed = SynthConfig(**YAML_SIZES, noise_std=11.0)
    assert changed.fingerprint() != SynthConfig(**YAML_SIZES).fingerprint()


def test_ensure_reuses_a_finished_folder(tmp_path: Path) -> None:
    root = ensure_synthfer(tmp_path, SMALL, workers=1)
    assert root == tmp_path / f"synthfer-{SMALL.fingerprint()}"
    assert (root / DONE_MARKER).is_file()
    assert load_rafdb(root).train.labels.shape == (70,)
    stamp = (root / LABEL_FILE).stat().st_mtime_ns
    assert ensure_synthfer(tmp_path, SMALL, workers=1) == root
    assert (root / LABEL_FILE).stat().st_mtime_ns == stamp, "regenerated a finished folder"
    assert [p.name for p in tmp_path.iterdir()] == [root.name], "a released lock leaves no file"


def test_ensure_replaces_unfinished_folders(tmp_path: Path) -> None:
    root = tmp_path / f"synthfer-{SMALL.fingerprint()}"
    # A generation killed halfway: a folder without the marker, a few images, and a temporary
    # sibling from a process that died before its rename.
    (root / IMAGES).mkdir(parents=True)
    (root / IMAGES / "train_00001_aligned.jpg").write_bytes(b"half a jpeg")
    stale = tmp_path / f".{root.name}.tmp-deadhost-12345"
    stale.mkdir()
    assert ensure_synthfer(tmp_path, SMALL, workers=1) == root
    assert (root / DONE_MARKER).is_file() and not stale.exists()
    assert len(list((root / IMAGES).iterdir())) == 91
    with Image.open(root / IMAGES / "train_00001_aligned.jpg") as image:
        assert image.size == (32, 32)


_RACE = """
import os, sys
from pathlib import Path
from harness.data.synthfer import SynthConfig, ensure_synthfer
config = SynthConfig(train_size=40, test_size=10, image_size=24, seed=1234)
root = ensure_synthfer(Path(sys.argv[1]), config, workers=1)
print(os.stat(root).st_ino)
"""


def test_two_processes_at_once_generate_once(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, str(tmp_path)], stdout=subprocess.PIPE, env=env
        )
        for _ in range(2)
    ]
    inodes = [proc.communicate(timeout=60)[0].decode().strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    # A second generation would have renamed a new folder into place: another inode.
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert inodes == [str(os.stat(root).st_ino)] * 2
    assert json.loads((root / DONE_MARKER).read_text())["train_size"] == 40


def test_an_unusable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(DatasetError, match=r"not-a-folder.*cache_dir"):
        ensure_synthfer(blocker / "cache", SMALL, workers=1)
