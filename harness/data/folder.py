"""Generic class-folder datasets: ``<root>/train/<class>/*.jpg`` and ``<root>/test/<class>/*``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.data.table import FERDataset, ImageTable
from harness.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
FOLDER_LAYOUT = "<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg"


def scan_split(split_dir: Path, class_of: Callable[[str], int | None]) -> ImageTable:
    """Every image under ``split_dir/<class folder>/``; ``class_of`` maps a folder name to its
    label (None: not a class folder → error naming it)."""
    paths, labels = [], []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = class_of(folder.name)
        if label is None:
            raise DatasetError(f"{folder}: unexpected class folder {folder.name!r}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DatasetError(f"{split_dir}: no images found (expected {FOLDER_LAYOUT})")
    return ImageTable(tuple(paths), np.asarray(labels, dtype=np.int64))


def require_dir(path: Path, what: str, layout: str) -> None:
    """A clear error when a folder the layout needs is missing."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} does not exist (expected layout: {layout})")


def load_class_folders(root: Path, name: str = "folder") -> FERDataset:
    """A dataset laid out as one folder per class; classes are the train folder names."""
    root = Path(root)
    require_dir(root, "dataset folder", FOLDER_LAYOUT)
    for split in ("train", "test"):
        require_dir(root / split, f"{split} split", FOLDER_LAYOUT)
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    index = {c: i for i, c in enumerate(classes)}
    return FERDataset(
        name=name,
        classes=classes,
        train=scan_split(root / "train", index.get),
        test=scan_split(root / "test", index.get),
        root=root,
    )
