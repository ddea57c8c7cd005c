"""AffectNet-7 / AffectNet-8: the official CSV layout, with face-box crops where needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.data.table import AFFECTNET_CLASSES, FERDataset, ImageTable
from harness.errors import DatasetError

IMAGE_DIR = "Manually_Annotated_Images"
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
LAYOUT = (
    "<root>/training.csv and <root>/validation.csv (columns subDirectory_filePath, face_x, "
    "face_y, face_width, face_height, facial_landmarks, expression, valence, arousal) and images "
    f"under <root>/{IMAGE_DIR}/<subDirectory_filePath>"
)
DROPPED_CODES = (8, 9, 10)  # None, Uncertain, No-Face: never used
# How many images to open (headers only) when deciding whether the copy is pre-cropped.
CROP_PROBE = 16


def read_split(csv_path: Path, num_classes: int) -> pd.DataFrame:
    """The rows of one CSV that belong to the task, validated; errors name file and line."""
    if not csv_path.is_file():
        raise DatasetError(f"AffectNet file not found: {csv_path} (expected {LAYOUT})")
    try:
        frame = pd.read_csv(csv_path, dtype={"subDirectory_filePath": str}, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path}: not a readable CSV ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing columns {missing} (expected {LAYOUT})")
    for column in COLUMNS[1:]:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() | (numeric % 1 != 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetError(
                f"{csv_path}, line {row + 2}: {column} must be an integer, "
                f"got {frame[column].iloc[row]!r}"
            )
        frame[column] = numeric.astype(np.int64)
    codes = frame["expression"]
    unknown = ~codes.between(0, 10)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DatasetError(
            f"{csv_path}, line {row + 2}: expression code must be 0-10, got {codes.iloc[row]}"
        )
    return frame[codes < num_classes].reset_index(drop=True)


def _files_under(folder: Path) -> set[str]:
    """Relative paths of every file under ``folder`` (one walk instead of 290k stat calls)."""
    found = set()
    for directory, _, files in os.walk(folder):
        rel = os.path.relpath(directory, folder)
        found.update(f if rel == "." else f"{rel}/{f}" for f in files)
    return found


def _already_cropped(image_root: Path, frame: pd.DataFrame) -> bool:
    """Whether the images are face crops already: the probed images have the face box's size
    (±2 px) rather than the original photo's."""
    probe = frame.head(CROP_PROBE)
    same = 0
    for rel, w, h in zip(
        probe["subDirectory_filePath"], probe["face_width"], probe["face_height"], strict=True
    ):
        with Image.open(image_root / rel) as image:
            same += abs(image.width - w) <= 2 and abs(image.height - h) <= 2
    return same > len(probe) // 2


def _table(
    frame: pd.DataFrame, image_root: Path, on_disk: set[str], crop: bool, csv: Path
) -> ImageTable:
    rels = frame["subDirectory_filePath"].tolist()
    missing = [r for r in rels if r not in on_disk]
    if missing:
        raise DatasetError(
            f"{len(missing)} images listed in {csv} are missing under {image_root}, "
            f"e.g. {', '.join(missing[:3])}"
        )
    if not rels:
        raise DatasetError(f"{csv}: no rows with the kept expression codes")
    boxes = (
        frame[["face_x", "face_y", "face_width", "face_height"]].to_numpy(np.int64)
        if crop
        else None
    )
    return ImageTable(
        tuple(image_root / r for r in rels), frame["expression"].to_numpy(np.int64), boxes
    )


def load_affectnet(
    root: Path, num_classes: int = 7, crop: str = "auto", name: str | None = None
) -> FERDataset:
    """AffectNet from ``root``: training.csv → train, validation.csv → test (the usual test set).

    ``crop``: ``true`` crops every image with its face box, ``false`` never, ``auto`` crops
    unless the images already have the face box's size (a pre-cropped copy).
    """
    root = Path(root)
    if num_classes not in (7, 8):
        raise DatasetError(f"AffectNet has 7 or 8 classes, not {num_classes}")
    if not root.is_dir():
        raise DatasetError(f"AffectNet folder not found: {root} (expected {LAYOUT})")
    image_root = root / IMAGE_DIR
    if not image_root.is_dir():
        raise DatasetError(f"AffectNet image folder not found: {image_root} (expected {LAYOUT})")
    frames = {
        s: read_split(root / f"{c}.csv", num_classes)
        for s, c in (("train", "training"), ("test", "validation"))
    }
    on_disk = _files_under(image_root)
    if crop == "auto":
        probe = frames["train"][frames["train"]["subDirectory_filePath"].isin(on_disk)]
        do_crop = not _already_cropped(image_root, probe)
    elif str(crop).lower() in ("true", "false"):
        do_crop = str(crop).lower() == "true"
    else:
        raise DatasetError(f"dataset.crop={crop!r}: choose auto, true or false")
    tables = {
        split: _table(frame, image_root, on_disk, do_crop, root / f"{csv}.csv")
        for (split, frame), csv in zip(frames.items(), ("training", "validation"), strict=True)
    }
    return FERDataset(
        name or f"affectnet{num_classes}",
        AFFECTNET_CLASSES[:num_classes],
        tables["train"],
        tables["test"],
        root,
    )
