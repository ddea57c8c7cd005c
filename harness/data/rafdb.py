"""RAF-DB (basic, 7 classes): the official layout and the class-folder copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.folder import require_dir, scan_split
from harness.data.table import RAFDB_CLASSES, FERDataset, ImageTable
from harness.errors import DatasetError

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: RAF-DB's own spelling
IMAGE_DIR = Path("Image") / "aligned"
OFFICIAL_LAYOUT = (
    "<root>/EmoLabel/list_patition_label.txt with lines like 'train_00001.jpg 5' (label 1-7), "
    "and images <root>/Image/aligned/train_00001_aligned.jpg"
)
FOLDERS_LAYOUT = "<root>/train/<1..7>/*.jpg and <root>/test/<1..7>/*.jpg"


def read_label_file(path: Path) -> list[tuple[str, int]]:
    """``(name, label 0..6)`` per line; a bad line raises naming the file and line number."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DatasetError(f"{path}, line {number}: expected 'name.jpg label', got {line!r}")
        name, label = fields
        if not label.isdigit() or not 1 <= int(label) <= 7:
            raise DatasetError(f"{path}, line {number}: label must be 1-7, got {line!r}")
        if not name.startswith(("train_", "test_")):
            raise DatasetError(
                f"{path}, line {number}: image name must start with train_ or test_, got {line!r}"
            )
        entries.append((name, int(label) - 1))
    return entries


def _official(root: Path, name: str) -> FERDataset:
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DatasetError(
            f"RAF-DB label file not found: {label_file} (expected {OFFICIAL_LAYOUT})"
        )
    require_dir(root / IMAGE_DIR, "RAF-DB image folder", OFFICIAL_LAYOUT)
    on_disk = {entry.name for entry in (root / IMAGE_DIR).iterdir()}
    splits: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    missing = []
    for image_name, label in read_label_file(label_file):
        file_name = f"{Path(image_name).stem}_aligned{Path(image_name).suffix}"
        if file_name not in on_disk:
            missing.append(file_name)
            continue
        paths, labels = splits["train" if image_name.startswith("train_") else "test"]
        paths.append(root / IMAGE_DIR / file_name)
        labels.append(label)
    if missing:
        raise DatasetError(
            f"{len(missing)} images listed in {label_file} are missing from {root / IMAGE_DIR}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    tables = {}
    for split, (paths, labels) in splits.items():
        if not paths:
            raise DatasetError(f"{label_file}: no {split}_ images listed")
        tables[split] = ImageTable(tuple(paths), np.asarray(labels, dtype=np.int64))
    return FERDataset(name, RAFDB_CLASSES, tables["train"], tables["test"], root)


def _folders(root: Path, name: str) -> FERDataset:
    for split in ("train", "test"):
        require_dir(root / split, f"RAF-DB {split} folder", FOLDERS_LAYOUT)

    def class_of(folder: str) -> int | None:
        return int(folder) - 1 if folder.isdigit() and 1 <= int(folder) <= 7 else None

    return FERDataset(
        name,
        RAFDB_CLASSES,
        scan_split(root / "train", class_of),
        scan_split(root / "test", class_of),
        root,
    )


def load_rafdb(root: Path, layout: str = "auto", name: str = "rafdb") -> FERDataset:
    """RAF-DB basic from ``root``; ``layout`` is ``official``, ``folders`` or ``auto``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"RAF-DB folder not found: {root} (expected {OFFICIAL_LAYOUT}; or {FOLDERS_LAYOUT})"
        )
    if layout == "auto":
        layout = (
            "folders"
            if not (root / LABEL_FILE).exists() and (root / "train").is_dir()
            else "official"
        )
    if layout == "official":
        return _official(root, name)
    if layout == "folders":
        return _folders(root, name)
    raise DatasetError(f"dataset.layout={layout!r}: choose auto, official or folders")
