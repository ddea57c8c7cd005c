"""Decoding one face image: open, crop the face box, resize to the training resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.data.table import ImageTable
from harness.errors import DatasetError


def load_face(path: Path, box: np.ndarray | None, size: int) -> np.ndarray:
    """The face in ``path`` as uint8 (size, size, 3); ``box`` = x, y, w, h (-1s: no crop)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if box is not None and box[2] > 0 and box[3] > 0:
                x, y, w, h = (int(v) for v in box)
                left, top = max(0, x), max(0, y)
                right, bottom = min(image.width, x + w), min(image.height, y + h)
                if right > left and bottom > top:  # a box outside the image: keep it whole
                    image = image.crop((left, top, right, bottom))
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot decode image {path}: {err}") from None


class LazyImages:
    """A split's faces decoded on access (used when the uint8 cache is off)."""

    def __init__(self, table: ImageTable, size: int) -> None:
        self.table, self.size = table, size

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:
        box = None if self.table.boxes is None else self.table.boxes[index]
        return load_face(self.table.paths[index], box, self.size)
