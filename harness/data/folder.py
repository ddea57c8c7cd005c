"""Generic class-folder datasets: ``<root>/train/<class>/*.jpg`` and ``<root>/test/<class>/*``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.data.table import FERDataset, ImageTable
from harness.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# How many missing image names an error lists before "...".
SHOW_MISSING = 5
FOLDER_LAYOUT = (
    "<root>/train/<class>/*.jpg|jpeg|png and <root>/test/<class>/*.jpg|jpeg|png, "
    "with the same class folder names in both splits"
)


def class_dirs(split_dir: Path) -> list[Path]:
    """The class folders of a split, sorted; hidden folders (.ipynb_checkpoints, ...) are not
    classes."""
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_split(
    split_dir: Path, class_of: Callable[[str], int | None], layout: str = FOLDER_LAYOUT
) -> ImageTable:
    """Every image under ``split_dir/<class folder>/``, sorted by folder then file name.

    ``class_of`` maps a folder name to its label; None means the folder is not one of the
    dataset's classes, which is an error naming the folder. Non-image files are skipped.
    """
    paths: list[Path] = []
    labels: list[int] = []
    for folder in class_dirs(split_dir):
        label = class_of(folder.name)
        if label is None:
            raise DatasetError(
                f"{folder}: unexpected class folder {folder.name!r} (expected {layout})"
            )
        files = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DatasetError(f"{split_dir}: no images found (expected {layout})")
    return ImageTable(tuple(paths), np.asarray(labels, dtype=np.int64))


def missing_error(missing: list[str], listed_in: Path, folder: Path) -> DatasetError:
    """One error for every listed image absent from disk: the count and the first few names."""
    shown = ", ".join(missing[:SHOW_MISSING]) + (", ..." if len(missing) > SHOW_MISSING else "")
    return DatasetError(
        f"{len(missing)} images listed in {listed_in} are missing from {folder}: {shown}"
    )


def require_dir(path: Path, what: str, layout: str) -> None:
    """A clear error when a folder the layout needs is missing."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} does not exist (expected layout: {layout})")


def load_class_folders(root: Path, name: str = "folder") -> FERDataset:
    """A dataset laid out as one folder per class in ``train/`` and ``test/``.

    Classes are the sorted train folder names (label i = i-th name); test may only use those
    names. A train class folder with no images is an error (the class could never be learnt).
    """
    root = Path(root)
    require_dir(root, "dataset folder", FOLDER_LAYOUT)
    for split in ("train", "test"):
        require_dir(root / split, f"{split} split", FOLDER_LAYOUT)
    classes = tuple(p.name for p in class_dirs(root / "train"))
    index = {c: i for i, c in enumerate(classes)}
    train = scan_split(root / "train", index.get)
    counts = np.bincount(train.labels, minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"{root / 'train'}: class folders without images: {', '.join(empty)} "
            f"(expected {FOLDER_LAYOUT})"
        )
    return FERDataset(
        name=name,
        classes=classes,
        train=train,
        test=scan_split(root / "test", index.get),
        root=root,
    )
