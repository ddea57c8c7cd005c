"""Plain data describing a dataset on disk: which image files, which labels, which face boxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# RAF-DB basic order (labels 1..7 on disk, 0..6 inside); synthfer uses it too.
RAFDB_CLASSES = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
# AffectNet expression codes 0..7 (8..10 are never used for training or testing).
AFFECTNET_CLASSES = (
    "Neutral",
    "Happiness",
    "Sadness",
    "Surprise",
    "Fear",
    "Disgust",
    "Anger",
    "Contempt",
)


@dataclass(frozen=True)
class ImageTable:
    """One split of a dataset: image paths, integer labels 0..C-1 and optional face boxes.

    ``boxes`` is None when every image is already a cropped face; otherwise an (N, 4) int
    array of x, y, width, height, with a row of -1 where that image needs no crop.
    ``box_file`` and ``box_lines``: where each box was read (the file, and its line per row),
    so that a box that misses its image is reported where it can be fixed.
    """

    paths: tuple[Path, ...]
    labels: np.ndarray
    boxes: np.ndarray | None = None
    box_file: Path | None = None
    box_lines: np.ndarray | None = None

    def box_origin(self, index: int) -> str | None:
        """``<file>, line <n>`` of row ``index``'s box; None where unknown."""
        if self.box_file is None or self.box_lines is None:
            return None
        return f"{self.box_file}, line {int(self.box_lines[index])}"

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError("ImageTable: paths and labels differ in length")
        if self.boxes is not None and self.boxes.shape != (len(self.paths), 4):
            raise ValueError("ImageTable: boxes must have shape (N, 4)")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class FERDataset:
    """A dataset as the harness uses it: a name, its class names and its train/test tables."""

    name: str
    classes: tuple[str, ...]
    train: ImageTable
    test: ImageTable
    root: Path

    @property
    def num_classes(self) -> int:
        return len(self.classes)
