"""RAF-DB (basic, 7 classes): the official layout and the class-folder copy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.data.folder import missing_error, require_dir, scan_split
from harness.data.table import RAFDB_CLASSES, FERDataset, ImageTable
from harness.errors import ConfigError, DatasetError

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: RAF-DB's own spelling
IMAGE_DIR = Path("Image") / "aligned"
OFFICIAL_LAYOUT = (
    "<root>/EmoLabel/list_patition_label.txt with lines like 'train_00001.jpg 5' "
    "(label 1-7, names train_* or test_*), and images <root>/Image/aligned/train_00001_aligned.jpg"
)
FOLDERS_LAYOUT = "<root>/train/<1..7>/*.jpg and <root>/test/<1..7>/*.jpg"
LAYOUTS = ("auto", "official", "folders")


def read_label_file(path: Path) -> list[tuple[str, int]]:
    """``(image name, label 0..6)`` per non-blank line of ``list_patition_label.txt``.

    A bad line raises :class:`DatasetError` naming the file, the line number and the line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a UTF-8 text file ({err})") from None
    entries: list[tuple[str, int]] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}, line {number}"
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected 'name.jpg label', got {line!r}")
        name, label = fields
        if not (label.isascii() and label.isdigit() and 1 <= int(label) <= 7):
            raise DatasetError(f"{where}: label must be 1-7, got {line!r}")
        if not name.startswith(("train_", "test_")):
            raise DatasetError(
                f"{where}: must start with train_ or test_ (the name gives the split), got {line!r}"
            )
        if name in first_line:
            raise DatasetError(f"{where}: {name} is already listed on line {first_line[name]}")
        first_line[name] = number
        entries.append((name, int(label) - 1))
    return entries


def aligned_name(name: str) -> str:
    """``train_00001.jpg`` → ``train_00001_aligned.jpg`` (the file under Image/aligned)."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}_aligned.{suffix}" if dot else f"{name}_aligned"


def _official(root: Path, name: str) -> FERDataset:
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DatasetError(
            f"RAF-DB label file not found: {label_file} (expected {OFFICIAL_LAYOUT})"
        )
    image_dir = root / IMAGE_DIR
    require_dir(image_dir, "RAF-DB image folder", OFFICIAL_LAYOUT)
    # One directory listing instead of a stat per image.
    on_disk = {entry.name for entry in os.scandir(image_dir)}
    splits: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    missing: list[str] = []
    for image_name, label in read_label_file(label_file):
        file_name = aligned_name(image_name)
        if file_name not in on_disk:
            missing.append(file_name)
            continue
        paths, labels = splits["train" if image_name.startswith("train_") else "test"]
        paths.append(image_dir / file_name)
        labels.append(label)
    if missing:
        raise missing_error(missing, label_file, image_dir)
    tables = {}
    for split, (paths, labels) in splits.items():
        if not paths:
            raise DatasetError(
                f"{label_file}: no {split}_* images listed (expected {OFFICIAL_LAYOUT})"
            )
        tables[split] = ImageTable(tuple(paths), np.asarray(labels, dtype=np.int64))
    return FERDataset(name, RAFDB_CLASSES, tables["train"], tables["test"], root)


def _class_of(folder: str) -> int | None:
    """Folder ``1``..``7`` → label 0..6; anything else is not a RAF-DB class folder."""
    if folder.isascii() and folder.isdigit() and 1 <= int(folder) <= 7:
        return int(folder) - 1
    return None


def _folders(root: Path, name: str) -> FERDataset:
    for split in ("train", "test"):
        require_dir(root / split, f"RAF-DB {split} folder", FOLDERS_LAYOUT)
    return FERDataset(
        name,
        RAFDB_CLASSES,
        scan_split(root / "train", _class_of, FOLDERS_LAYOUT),
        scan_split(root / "test", _class_of, FOLDERS_LAYOUT),
        root,
    )


def detect_layout(root: Path) -> str:
    """``official`` when the label file is there, ``folders`` when train/ and test/ are."""
    if (root / LABEL_FILE).exists():
        return "official"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folders"
    raise DatasetError(
        f"RAF-DB label file not found: {root / LABEL_FILE}, and no train/ or test/ folder "
        f"either. Expected {OFFICIAL_LAYOUT}; or the class-folder copy {FOLDERS_LAYOUT}"
    )


def load_rafdb(root: Path, layout: str = "auto", name: str = "rafdb") -> FERDataset:
    """RAF-DB basic from ``root``: ``train_*`` images → train, ``test_*`` → test, labels 0..6.

    ``layout`` is ``official`` (EmoLabel/ + Image/aligned/), ``folders`` (train/<1..7>/,
    test/<1..7>/) or ``auto`` (whichever is there; the label file wins if both are).
    """
    root = Path(root).expanduser()
    if layout not in LAYOUTS:
        raise ConfigError(f"dataset.layout={layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DatasetError(
            f"RAF-DB folder not found: {root} (expected {OFFICIAL_LAYOUT}; or {FOLDERS_LAYOUT})"
        )
    if layout == "auto":
        layout = detect_layout(root)
    return _official(root, name) if layout == "official" else _folders(root, name)
