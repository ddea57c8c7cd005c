"""AffectNet-7 / AffectNet-8: the official CSV layout, with face-box crops where needed.

``training.csv`` is the train split and ``validation.csv`` the test split (the official
validation set is the test set every paper reports). Expression codes 0..num_classes-1 are kept
as labels; 7 (Contempt) is dropped for AffectNet-7 and 8-10 (None, Uncertain, No-Face) always.

Cropping (``crop="auto"``): AffectNet ships the original photos plus a face box per row, but
many copies in circulation hold the faces already cropped (sometimes also resized). ``auto``
opens the headers of up to :data:`CROP_PROBE` images spread over the training rows (no pixel
decoding) and calls an image *pre-cropped* when either

* its size equals its row's face box size (±2 px or 2%): cropped, not resized; or
* its row's face box does not fit inside it: a box in photo coordinates cannot belong to an
  image smaller than the box, so the image is a resized crop;

and additionally treats the whole copy as pre-cropped when every probed image has the same
size although their face boxes differ (original photos vary in size; resized crops do not).
Otherwise it crops unless at least half the probed images look pre-cropped. Set
``crop=true`` / ``false`` to override.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from harness.data.folder import missing_error
from harness.data.table import AFFECTNET_CLASSES, FERDataset, ImageTable
from harness.errors import ConfigError, DatasetError

IMAGE_DIR = "Manually_Annotated_Images"
SPLIT_FILES = (("train", "training.csv"), ("test", "validation.csv"))
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
COLUMNS = ("subDirectory_filePath", *BOX_COLUMNS, "expression")
LAYOUT = (
    "<root>/training.csv and <root>/validation.csv (columns subDirectory_filePath, face_x, "
    "face_y, face_width, face_height, facial_landmarks, expression, valence, arousal) and images "
    f"under <root>/{IMAGE_DIR}/<subDirectory_filePath>"
)
MAX_CODE = 10  # 8 None, 9 Uncertain, 10 No-Face: valid codes, never used as labels
CROP_PROBE = 16  # images whose headers crop="auto" opens
CROP_CHOICES = ("auto", "true", "false")


def _first_bad_line(frame: pd.DataFrame, bad: pd.Series) -> tuple[int, int]:
    """(position, file line) of the first True in ``bad``; the index holds the 0-based data
    row as read (blank lines included), and the header is line 1."""
    position = int(np.flatnonzero(bad.to_numpy())[0])
    return position, int(frame.index[position]) + 2


def read_split(csv_path: Path, num_classes: int, boxes: bool = True) -> pd.DataFrame:
    """The rows of one CSV whose expression code is a kept class, with integer columns and
    each row's ``line`` in the file.

    Missing columns, non-integer values, codes outside 0..10 and (``boxes``) a face box that
    is not a box (a negative corner, a width or height ≤ 0) raise :class:`DatasetError`
    naming the file, the line and the field. Without ``boxes`` (``dataset.crop=false``) the
    box columns are not read at all.
    """
    wanted = COLUMNS if boxes else (COLUMNS[0], COLUMNS[-1])
    if not csv_path.is_file():
        raise DatasetError(f"AffectNet file not found: {csv_path} (expected {LAYOUT})")
    try:
        # Only the needed columns: the long landmark strings are skipped, not stored.
        frame = pd.read_csv(
            csv_path,
            usecols=lambda column: column.strip() in wanted,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,  # keep row i on line i + 2, so messages point at the line
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path}: not a readable CSV ({err})") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing columns {missing} (expected {LAYOUT})")
    # Short rows give NaN; blank lines (kept above for the line count) are dropped here.
    frame = frame.fillna("").apply(lambda column: column.str.strip())
    frame = frame[(frame != "").any(axis=1)]
    blank = frame["subDirectory_filePath"] == ""
    if blank.any():
        _, line = _first_bad_line(frame, blank)
        raise DatasetError(f"{csv_path}, line {line}: subDirectory_filePath is empty")
    out = pd.DataFrame({"subDirectory_filePath": frame["subDirectory_filePath"]})
    for column in wanted[1:]:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() | (numeric % 1 != 0)
        if bad.any():
            position, line = _first_bad_line(frame, bad)
            raise DatasetError(
                f"{csv_path}, line {line}: {column} must be an integer, "
                f"got {frame[column].iloc[position]!r}"
            )
        out[column] = numeric.astype(np.int64)
    if boxes:
        _check_boxes(out, csv_path)
    out["line"] = out.index + 2  # the header is line 1 (blank lines were kept above)
    codes = out["expression"]
    unknown = ~codes.between(0, MAX_CODE)
    if unknown.any():
        position, line = _first_bad_line(out, unknown)
        raise DatasetError(
            f"{csv_path}, line {line}: expression code must be 0-{MAX_CODE}, "
            f"got {codes.iloc[position]}"
        )
    return out[codes < num_classes].reset_index(drop=True)


def _check_boxes(frame: pd.DataFrame, csv_path: Path) -> None:
    """A face box must be one: corner ≥ 0, width and height > 0 (whether it also lies inside
    its image is checked as the image is decoded, see :func:`harness.data.images.load_face`)."""
    for column, low, what in (
        ("face_x", 0, "≥ 0"),
        ("face_y", 0, "≥ 0"),
        ("face_width", 1, "> 0"),
        ("face_height", 1, "> 0"),
    ):
        bad = frame[column] < low
        if bad.any():
            position, line = _first_bad_line(frame, bad)
            raise DatasetError(
                f"{csv_path}, line {line}: {column} must be {what}, got "
                f"{frame[column].iloc[position]} (a face box; dataset.crop=false ignores boxes)"
            )


def files_under(folder: Path) -> set[str]:
    """Relative '/'-separated paths of every file under ``folder``: one directory walk instead
    of a stat call per CSV row (~290k for AffectNet)."""
    found: set[str] = set()
    for directory, _, files in os.walk(folder):
        rel = os.path.relpath(directory, folder).replace(os.sep, "/")
        found.update(files if rel == "." else (f"{rel}/{f}" for f in files))
    return found


def looks_precropped(image_root: Path, frame: pd.DataFrame) -> bool:
    """Whether the images are face crops already (the rule is in the module docstring)."""
    if frame.empty:
        return False
    rows = frame.iloc[np.unique(np.linspace(0, len(frame) - 1, CROP_PROBE).astype(int))]
    sizes, boxes, votes = set(), set(), 0
    for rel, x, y, w, h in zip(*(rows[c] for c in COLUMNS[:5]), strict=True):
        path = image_root / rel
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetError(f"cannot read image {path}: {err}") from None
        sizes.add((width, height))
        boxes.add((w, h))
        same = abs(width - w) <= max(2, 0.02 * w) and abs(height - h) <= max(2, 0.02 * h)
        overflows = x + w > width * 1.05 + 2 or y + h > height * 1.05 + 2
        votes += same or overflows
    if len(rows) >= 4 and len(sizes) == 1 and len(boxes) > 1:
        return True  # one image size for faces of many sizes: resized crops
    return 2 * votes >= len(rows)


def _crop_setting(crop: str | bool) -> str:
    # Hydra turns `crop: true` into a bool; accept both spellings.
    value = str(crop).strip().lower()
    if value not in CROP_CHOICES:
        raise ConfigError(f"dataset.crop={crop!r}: choose one of {', '.join(CROP_CHOICES)}")
    return value


def _table(frame: pd.DataFrame, image_root: Path, crop: bool, csv_path: Path) -> ImageTable:
    if frame.empty:
        raise DatasetError(f"{csv_path}: no rows with a kept expression code (expected {LAYOUT})")
    paths = tuple(image_root / rel for rel in frame["subDirectory_filePath"])
    labels = frame["expression"].to_numpy(np.int64)
    if not crop:
        return ImageTable(paths, labels)
    boxes = frame[list(BOX_COLUMNS)].to_numpy(np.int64)
    return ImageTable(paths, labels, boxes, csv_path, frame["line"].to_numpy(np.int64))


def load_affectnet(
    root: Path, num_classes: int = 7, crop: str | bool = "auto", name: str | None = None
) -> FERDataset:
    """AffectNet-``num_classes`` (7 or 8) from ``root``: training.csv → train, validation.csv →
    test, labels = expression codes 0..num_classes-1.

    ``crop``: ``true`` crops every image with its face box, ``false`` never, ``auto`` crops
    unless the copy is already cropped (see the module docstring for the rule). The name
    defaults to ``affectnet7`` / ``affectnet8``.
    """
    root = Path(root).expanduser()
    if num_classes not in (7, 8):
        raise ConfigError(f"dataset.num_classes={num_classes}: AffectNet has 7 or 8 classes")
    setting = _crop_setting(crop)
    if not root.is_dir():
        raise DatasetError(f"AffectNet folder not found: {root} (expected {LAYOUT})")
    image_root = root / IMAGE_DIR
    read_boxes = setting != "false"  # crop=false: boxes are not read, nor checked
    frames = {
        split: read_split(root / file, num_classes, read_boxes) for split, file in SPLIT_FILES
    }
    if not image_root.is_dir():
        raise DatasetError(f"AffectNet image folder not found: {image_root} (expected {LAYOUT})")
    on_disk = files_under(image_root)
    for split, file in SPLIT_FILES:
        listed = frames[split]["subDirectory_filePath"]
        absent = listed[~listed.isin(on_disk)]
        if len(absent):
            raise missing_error(absent.tolist(), root / file, image_root)
    do_crop = (
        setting == "true"
        if setting != "auto"
        else not looks_precropped(image_root, frames["train"])
    )
    tables = {
        split: _table(frames[split], image_root, do_crop, root / file)
        for split, file in SPLIT_FILES
    }
    return FERDataset(
        name or f"affectnet{num_classes}",
        AFFECTNET_CLASSES[:num_classes],
        tables["train"],
        tables["test"],
        root,
    )
