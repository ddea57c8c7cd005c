"""Every malformed AffectNet face box is refused, naming the file, the line and the field (a
negative or zero size, a negative corner, a non-number, a box outside its image), unless
``dataset.crop=false``, when boxes are not read at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_affectnet

from harness.data.affectnet import load_affectnet
from harness.data.cache import decoded_images
from harness.data.images import LazyImages
from harness.errors import DatasetError

# Data row 2 (training_2.jpg, a 50x42 photo with the box 6,3,12,14) is line 4 of training.csv.
ROW = ",6,3,12,14,"


def _edit_row(root: Path, new: str) -> Path:
    csv = root / "training.csv"
    lines = csv.read_text().splitlines(keepends=True)
    assert ROW in lines[3]
    lines[3] = lines[3].replace(ROW, new)
    csv.write_text("".join(lines))
    return csv


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (",6,3,-5,14,", "face_width must be > 0, got -5"),
        (",6,3,12,0,", "face_height must be > 0, got 0"),
        (",-2,3,12,14,", "face_x must be ≥ 0, got -2"),
        (",6,-1,12,14,", "face_y must be ≥ 0, got -1"),
        (",6,3,12,n/a,", "face_height must be an integer, got 'n/a'"),
    ],
)
def test_a_box_that_is_no_box_names_file_line_and_field(
    tmp_path: Path, new: str, expected: str
) -> None:
    csv = _edit_row(make_affectnet(tmp_path / "an"), new)
    for crop in ("auto", "true"):
        with pytest.raises(DatasetError) as caught:
            load_affectnet(tmp_path / "an", crop=crop)
        assert str(caught.value).startswith(f"{csv}, line 4: {expected}"), str(caught.value)
    ds = load_affectnet(tmp_path / "an", crop="false")  # boxes are not read
    assert ds.train.boxes is None and len(ds.train) == 5


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (",6,3,45,14,", "face_width: face_x + face_width = 51 > image width 50"),
        (",6,30,12,14,", "face_height: face_y + face_height = 44 > image height 42"),
    ],
)
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "lazy"])
def test_a_box_outside_its_image_names_file_line_and_field(
    tmp_path: Path, new: str, expected: str, cache: bool
) -> None:
    csv = _edit_row(make_affectnet(tmp_path / "an"), new)
    ds = load_affectnet(tmp_path / "an", crop="true")
    with pytest.raises(DatasetError) as caught:
        if cache:
            decoded_images(ds.train, 12, tmp_path / "cache", key="an", workers=1, progress=False)
        else:
            np.stack([LazyImages(ds.train, 12)[i] for i in range(len(ds.train))])
    message = str(caught.value)
    assert message.startswith(f"{csv}, line 4: the face box lies outside image "), message
    assert expected in message and "dataset.crop=false" in message
    assert "\n" not in message
    uncropped = load_affectnet(tmp_path / "an", crop="false")
    assert LazyImages(uncropped.train, 12)[2].shape == (12, 12, 3)
