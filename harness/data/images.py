"""Decoding one face image: open, crop the face box, resize to the training resolution."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.data.table import ImageTable
from harness.errors import DatasetError

# Bumped whenever load_face's output changes for the same input, so stale caches rebuild.
DECODE_VERSION = 1


def _scaled_box(
    box: np.ndarray | None, full: tuple[int, int], now: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The face box (x, y, w, h in ``full``-size pixels) in the pixels of the decoded image
    (``now``, smaller after a JPEG draft); None when there is nothing to crop."""
    if box is None or box[2] <= 0 or box[3] <= 0:
        return None
    sx, sy = now[0] / full[0], now[1] / full[1]
    x, y, w, h = (int(v) for v in box)
    return round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))


def box_outside(box: np.ndarray, image_size: tuple[int, int]) -> str | None:
    """What makes face box ``box`` (x, y, w, h) leave an image of ``image_size`` (w, h), naming
    the field; None when it lies inside."""
    x, y, w, h = (int(v) for v in box)
    width, height = image_size
    for field, value, limit, what in (
        ("face_x", x, 0, None),
        ("face_y", y, 0, None),
        ("face_width", x + w, width, f"face_x + face_width = {x + w} > image width {width}"),
        ("face_height", y + h, height, f"face_y + face_height = {y + h} > image height {height}"),
    ):
        if what is None and value < limit:
            return f"{field} = {value} < 0"
        if what is not None and value > limit:
            return f"{field}: {what}"
    return None


def load_face(
    path: Path, box: np.ndarray | None, size: int, where: str | None = None
) -> np.ndarray:
    """The face in ``path`` as a uint8 (size, size, 3) RGB array.

    ``box`` is x, y, width, height in the image's pixels (a row of -1, or None: no crop). A box
    that does not lie inside the image raises :class:`DatasetError` naming ``where`` it was
    read (file and line), the field and the image: cropping it would silently train on
    something else than the face. Resizing is bilinear with antialiasing. A missing or
    undecodable file raises :class:`DatasetError`.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            full = image.size
            if box is not None and box[2] > 0 and box[3] > 0:
                problem = box_outside(box, full)
                if problem is not None:
                    raise DatasetError(
                        f"{where or path}: the face box lies outside image {path} "
                        f"({full[0]}x{full[1]}): {problem} (fix the row, or set "
                        "dataset.crop=false to use the images uncropped)"
                    )
            box_w, box_h = full if box is None or box[2] <= 0 or box[3] <= 0 else box[2:4]
            # JPEG draft: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the face stays at
            # least `size` px; decoding large AffectNet photos in full would dominate the cost.
            image.draft(
                "RGB",
                (
                    max(1, int(full[0] * size / max(int(box_w), 1))),
                    max(1, int(full[1] * size / max(int(box_h), 1))),
                ),
            )
            crop = _scaled_box(box, full, image.size)
            rgb = image.convert("RGB")
        if crop is not None:
            x, y, w, h = crop
            left, top = max(0, x), max(0, y)
            right, bottom = min(rgb.width, x + w), min(rgb.height, y + h)
            if right > left and bottom > top:  # else the box misses the image: keep it whole
                rgb = rgb.crop((left, top, right, bottom))
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image missing: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot decode image {path}: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Truncated JPEGs ("image file is truncated"), broken PNG chunks, unreadable files.
        raise DatasetError(f"cannot decode image {path}: {err}") from None


class LazyImages(Sequence[np.ndarray]):
    """A split's faces decoded on access (used when the uint8 cache is off).

    ``images[i]`` is a uint8 (size, size, 3) array, exactly what the cache would hold.
    """

    def __init__(self, table: ImageTable, size: int) -> None:
        self.table, self.size = table, int(size)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("LazyImages supports integer indices only")
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range 0..{len(self) - 1}")
        box = None if self.table.boxes is None else self.table.boxes[index]
        return load_face(self.table.paths[index], box, self.size, self.table.box_origin(index))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, size, size, 3), like the cached array's."""
        return (len(self), self.size, self.size, 3)
