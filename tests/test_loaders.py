"""Dataset loaders on real image files in each layout, the face decoder, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import colour_of, make_affectnet, save_image
from PIL import Image

from harness.data.affectnet import load_affectnet
from harness.data.folder import load_class_folders
from harness.data.images import LazyImages, load_face
from harness.data.rafdb import load_rafdb
from harness.data.table import AFFECTNET_CLASSES, RAFDB_CLASSES
from harness.errors import ConfigError, DatasetError

# ---------------------------------------------------------------- RAF-DB, official layout

RAF_LINES = ["train_00001.jpg 1", "train_00002.jpg 4", "test_0001.jpg 4", "train_00003.jpg 7"]
RAF_LINES += ["test_0002.jpg 2"]


def make_rafdb(root: Path, lines: list[str] = RAF_LINES) -> Path:
    """RAF-DB as it ships: EmoLabel/list_patition_label.txt + Image/aligned/<name>_aligned.jpg."""
    for i, line in enumerate(lines):
        stem = line.split()[0].removesuffix(".jpg")
        save_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", colour_of(i))
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def label_file(root: Path) -> Path:
    return root / "EmoLabel" / "list_patition_label.txt"


def test_rafdb_official_layout_splits_labels_and_pixels(tmp_path: Path) -> None:
    ds = load_rafdb(make_rafdb(tmp_path / "raf"), name="raf")
    assert ds.name == "raf" and ds.classes == RAFDB_CLASSES and ds.num_classes == 7
    assert [p.name for p in ds.train.paths] == [
        "train_00001_aligned.jpg",
        "train_00002_aligned.jpg",
        "train_00003_aligned.jpg",
    ]
    assert ds.train.labels.tolist() == [0, 3, 6]  # 1..7 on disk → 0..6
    assert [p.name for p in ds.test.paths] == ["test_0001_aligned.jpg", "test_0002_aligned.jpg"]
    assert ds.test.labels.tolist() == [3, 1]
    assert ds.train.boxes is None and ds.test.boxes is None
    # The third train image is line 4 of the label file, written in colour_of(3).
    face = LazyImages(ds.train, 8)[2]
    assert face.shape == (8, 8, 3) and face.dtype == np.uint8
    assert np.abs(face.astype(int) - colour_of(3)).max() <= 3


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("train_00009.jpg", "expected 'name.jpg label'"),
        ("train_00009.jpg 3 extra", "expected 'name.jpg label'"),
        ("train_00009.jpg 8", "label must be 1-7"),
        ("train_00009.jpg 0", "label must be 1-7"),
        ("train_00009.jpg happy", "label must be 1-7"),
        ("valid_00009.jpg 3", "must start with train_ or test_"),
        ("train_00002.jpg 3", "train_00002.jpg is already listed on line 2"),
    ],
)
def test_rafdb_bad_line_names_file_line_number_and_text(
    tmp_path: Path, line: str, problem: str
) -> None:
    root = make_rafdb(tmp_path / "raf")
    # Line 6 is blank (skipped, but still counted); the bad line is line 7.
    label_file(root).write_text(label_file(root).read_text() + "\n" + line + "\n")
    with pytest.raises(DatasetError) as caught:
        load_rafdb(root)
    message = str(caught.value)
    assert f"{label_file(root)}, line 7: " in message
    assert problem in message
    if "already listed" not in problem:
        assert repr(line) in message


def test_rafdb_label_file_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    root = make_rafdb(tmp_path / "raf")
    label_file(root).write_bytes(b"\xef\xbb\xbf" + "\r\n".join(RAF_LINES).encode())
    assert load_rafdb(root).train.labels.tolist() == [0, 3, 6]


def test_rafdb_missing_root_label_file_and_image_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"RAF-DB folder not found: .*nowhere.*EmoLabel"):
        load_rafdb(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    # Neither layout: the message shows both.
    with pytest.raises(DatasetError, match=r"label file not found.*list_patition_label.*train/"):
        load_rafdb(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"label file not found.*Image/aligned"):
        load_rafdb(tmp_path / "empty", layout="official")
    root = tmp_path / "labels-only"
    (root / "EmoLabel").mkdir(parents=True)
    label_file(root).write_text("train_00001.jpg 1\n")
    with pytest.raises(DatasetError, match=r"image folder not found: .*Image/aligned"):
        load_rafdb(root)


def test_rafdb_listed_images_missing_are_counted_and_named(tmp_path: Path) -> None:
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(12)] + ["test_0001.jpg 1"]
    root = make_rafdb(tmp_path / "raf", lines)
    for i in (2, 3, 4, 5, 6, 7, 9):
        (root / "Image" / "aligned" / f"train_{i:05d}_aligned.jpg").unlink()
    with pytest.raises(DatasetError) as caught:
        load_rafdb(root)
    message = str(caught.value)
    assert message.startswith(f"7 images listed in {label_file(root)} are missing from ")
    assert "train_00002_aligned.jpg" in message and ", ..." in message
    assert "train_00009_aligned.jpg" not in message  # only the first few are shown


def test_rafdb_empty_split_is_an_error(tmp_path: Path) -> None:
    root = make_rafdb(tmp_path / "raf", ["train_00001.jpg 1", "train_00002.jpg 2"])
    with pytest.raises(DatasetError, match=r"list_patition_label.txt: no test_\* images listed"):
        load_rafdb(root)


# ---------------------------------------------------------------- RAF-DB, class-folder copy


def test_rafdb_class_folder_copy(tmp_path: Path) -> None:
    for split, folder, count in (("train", "1", 2), ("train", "5", 1), ("test", "5", 2)):
        for i in range(count):
            save_image(tmp_path / split / folder / f"{i}.jpg", colour_of(i))
    (tmp_path / "train" / "1" / "notes.txt").write_text("not an image")
    for layout in ("auto", "folders"):
        ds = load_rafdb(tmp_path, layout=layout)
        assert ds.classes == RAFDB_CLASSES
        assert ds.train.labels.tolist() == [0, 0, 4]
        assert ds.test.labels.tolist() == [4, 4]
    with pytest.raises(ConfigError, match=r"dataset\.layout='flat'"):
        load_rafdb(tmp_path, layout="flat")
    save_image(tmp_path / "test" / "8" / "x.jpg", colour_of(0))
    with pytest.raises(DatasetError, match=r"unexpected class folder '8'.*<1\.\.7>"):
        load_rafdb(tmp_path)


def test_rafdb_class_folder_copy_without_test(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "1" / "a.jpg", colour_of(0))
    with pytest.raises(DatasetError, match=r"RAF-DB test folder not found: .*test"):
        load_rafdb(tmp_path)


# ---------------------------------------------------------------- AffectNet


# (expression code, split) per row; 7 is Contempt, 8-10 None / Uncertain / No-Face.
def test_affectnet_7_and_8_keep_their_codes_and_drop_8_to_10(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an")
    seven = load_affectnet(root, num_classes=7)
    assert seven.name == "affectnet7" and seven.classes == AFFECTNET_CLASSES[:7]
    assert seven.train.labels.tolist() == [0, 1, 6, 3, 5]  # 7 (Contempt) and 8-10 dropped
    assert seven.test.labels.tolist() == [2, 4]
    assert [p.name for p in seven.train.paths] == [f"training_{i}.jpg" for i in (0, 1, 2, 6, 8)]
    assert seven.train.paths[0] == root / "Manually_Annotated_Images" / "1" / "training_0.jpg"
    assert seven.train.boxes is not None
    assert seven.train.boxes.tolist()[:2] == [[4, 3, 10, 12], [5, 3, 11, 13]]
    eight = load_affectnet(root, num_classes=8, name="an8")
    assert eight.name == "an8" and eight.classes == AFFECTNET_CLASSES
    assert eight.train.labels.tolist() == [0, 1, 6, 7, 3, 5]
    assert eight.test.labels.tolist() == [2, 7, 4]


def test_affectnet_crop_auto_detects_precropped_copies(tmp_path: Path) -> None:
    assert load_affectnet(make_affectnet(tmp_path / "photos")).train.boxes is not None
    cropped = load_affectnet(make_affectnet(tmp_path / "cropped", mode="cropped"))
    assert cropped.train.boxes is None and cropped.test.boxes is None
    resized = load_affectnet(make_affectnet(tmp_path / "resized", mode="resized"))
    assert resized.train.boxes is None


def test_affectnet_crop_setting_overrides_detection(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an", mode="cropped")
    for value in ("true", True, "True"):
        ds = load_affectnet(root, crop=value)
        assert ds.train.boxes is not None and ds.train.boxes.shape == (5, 4)
    assert load_affectnet(make_affectnet(tmp_path / "p"), crop=False).train.boxes is None
    with pytest.raises(ConfigError, match=r"dataset\.crop='maybe'"):
        load_affectnet(root, crop="maybe")
    with pytest.raises(ConfigError, match="7 or 8"):
        load_affectnet(root, num_classes=6)


def test_affectnet_crop_uses_the_face_box(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an")
    photo = root / "Manually_Annotated_Images" / "1" / "training_0.jpg"
    canvas = Image.new("RGB", (48, 40), (0, 0, 255))
    canvas.paste((255, 0, 0), (4, 3, 14, 15))  # exactly the row's box 4, 3, 10×12
    canvas.save(photo, quality=95)
    ds = load_affectnet(root)
    face = LazyImages(ds.train, 12)[0].astype(int)
    assert np.abs(face[2:-2, 2:-2] - (255, 0, 0)).max() < 40  # the face, not the blue photo
    whole = load_face(photo, None, 12).astype(int)
    assert np.abs(whole[-1, -1] - (0, 0, 255)).max() < 40  # uncropped: photo corner


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (",6,3,12,14,", ",six,3,12,14,", "face_x must be an integer, got 'six'"),
        (",6,3,12,14,", ",6,3,,14,", "face_width must be an integer, got ''"),
        (",6,3,12,14,", ",6,3,12.5,14,", "face_width must be an integer, got '12.5'"),
        (",6,0.25,", ",11,0.25,", "expression code must be 0-10, got 11"),
        (",6,0.25,", ",-1,0.25,", "expression code must be 0-10, got -1"),
    ],
)
def test_affectnet_bad_row_names_file_and_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    root = make_affectnet(tmp_path / "an")
    csv = root / "training.csv"
    lines = csv.read_text().splitlines(keepends=True)
    # Data row 2 (training_2.jpg: box 6,3,12,14, code 6) is line 4: the header is line 1.
    assert old in lines[3]
    lines[3] = lines[3].replace(old, new)
    csv.write_text("".join(lines))
    with pytest.raises(DatasetError) as caught:
        load_affectnet(root)
    assert str(caught.value) == f"{csv}, line 4: {expected}"


def test_affectnet_short_row_is_reported(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an")
    csv = root / "training.csv"
    csv.write_text(csv.read_text() + "1/training_0.jpg,4,3\n")
    with pytest.raises(DatasetError, match=r"training.csv, line 11: face_width must be an integer"):
        load_affectnet(root)


def test_affectnet_line_numbers_survive_blank_lines(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an")
    csv = root / "training.csv"
    lines = csv.read_text().splitlines(keepends=True)
    lines.insert(2, "\n")
    lines[6] = lines[6].replace(",8,0.25,", ",x,0.25,")  # training_4 (code 8), now line 7
    csv.write_text("".join(lines))
    with pytest.raises(DatasetError, match=r"training.csv, line 7: expression must be an integer"):
        load_affectnet(root)


def test_affectnet_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"AffectNet folder not found: .*training.csv"):
        load_affectnet(tmp_path / "none")
    root = make_affectnet(tmp_path / "an")
    (root / "validation.csv").unlink()
    with pytest.raises(DatasetError, match=r"AffectNet file not found: .*validation.csv"):
        load_affectnet(root)
    root = make_affectnet(tmp_path / "an2")
    (root / "training.csv").write_text("subDirectory_filePath,face_x\n1/a.jpg,3\n")
    with pytest.raises(DatasetError, match=r"training.csv: missing columns \['face_y'"):
        load_affectnet(root)
    root = make_affectnet(tmp_path / "an3")
    (root / "Manually_Annotated_Images" / "2" / "training_4.jpg").unlink()  # code 8: dropped
    (root / "Manually_Annotated_Images" / "3" / "training_2.jpg").unlink()
    with pytest.raises(DatasetError) as caught:
        load_affectnet(root)
    assert str(caught.value).startswith(f"1 images listed in {root / 'training.csv'} are missing")
    assert str(caught.value).endswith(": 3/training_2.jpg")
    for path in (root / "Manually_Annotated_Images").rglob("*"):
        if path.is_file():
            path.unlink()
    (root / "Manually_Annotated_Images" / "1").rmdir()
    with pytest.raises(DatasetError, match="missing from"):
        load_affectnet(root)


def test_affectnet_split_without_kept_rows_is_an_error(tmp_path: Path) -> None:
    root = make_affectnet(tmp_path / "an", train_codes=[8, 9, 10])
    with pytest.raises(DatasetError, match=r"training.csv: no rows with a kept expression code"):
        load_affectnet(root)


# ---------------------------------------------------------------- generic class folders


def test_generic_class_folders(tmp_path: Path) -> None:
    for split, cls, count in (("train", "sad", 2), ("train", "happy", 1), ("test", "sad", 1)):
        for i in range(count):
            save_image(tmp_path / split / cls / f"{i}.png", colour_of(i))
    save_image(tmp_path / "train" / "happy" / "b.JPEG", colour_of(4))
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    (tmp_path / "train" / "sad" / "Thumbs.db").write_bytes(b"\0")
    ds = load_class_folders(tmp_path, name="mine")
    assert ds.name == "mine" and ds.classes == ("happy", "sad")
    assert [p.name for p in ds.train.paths] == ["0.png", "b.JPEG", "0.png", "1.png"]
    assert ds.train.labels.tolist() == [0, 0, 1, 1]
    assert ds.test.labels.tolist() == [1]  # test may lack a class


def test_generic_class_folders_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset folder not found: .*none"):
        load_class_folders(tmp_path / "none")
    save_image(tmp_path / "train" / "happy" / "a.jpg", colour_of(0))
    with pytest.raises(DatasetError, match=r"test split not found: .*test"):
        load_class_folders(tmp_path)
    save_image(tmp_path / "test" / "angry" / "b.jpg", colour_of(1))
    with pytest.raises(DatasetError, match=r"unexpected class folder 'angry'"):
        load_class_folders(tmp_path)
    (tmp_path / "test" / "angry" / "b.jpg").rename(tmp_path / "test" / "b.jpg")
    (tmp_path / "test" / "angry").rmdir()
    with pytest.raises(DatasetError, match=r"test: no images found"):
        load_class_folders(tmp_path)
    save_image(tmp_path / "test" / "happy" / "c.jpg", colour_of(2))
    (tmp_path / "train" / "sad").mkdir()
    with pytest.raises(DatasetError, match=r"class folders without images: sad"):
        load_class_folders(tmp_path)


# ---------------------------------------------------------------- decoding one face


def test_load_face_crops_and_resizes(tmp_path: Path) -> None:
    canvas = Image.new("RGB", (40, 30), (0, 0, 255))
    canvas.paste((255, 0, 0), (30, 20, 40, 30))  # red bottom-right corner 10×10
    path = tmp_path / "photo.png"  # lossless, so colours are exact
    canvas.save(path)
    red = load_face(path, np.array([30, 20, 10, 10]), 4)
    assert red.shape == (4, 4, 3) and red.dtype == np.uint8
    assert (red == (255, 0, 0)).all()
    # A box running off the image, or wholly outside it, is an error: cropping it would train
    # on something else than the face (tests/test_affectnet_boxes.py: the file and line).
    for box in (np.array([30, 20, 25, 25]), np.array([100, 100, 5, 5])):
        with pytest.raises(DatasetError, match="the face box lies outside image"):
            load_face(path, box, 4)
    # -1 row, or no box: the whole image.
    for box in (np.array([-1, -1, -1, -1]), None):
        whole = load_face(path, box, 8)
        assert (whole[0, 0] == (0, 0, 255)).all() and (whole[7, 7] == (255, 0, 0)).all()


def test_load_face_converts_grey_and_rgba_to_rgb(tmp_path: Path) -> None:
    Image.new("L", (10, 10), 77).save(tmp_path / "grey.jpg")
    Image.new("RGBA", (10, 10), (10, 20, 30, 128)).save(tmp_path / "rgba.png")
    grey = load_face(tmp_path / "grey.jpg", None, 6)
    assert grey.shape == (6, 6, 3) and np.abs(grey.astype(int) - 77).max() <= 2
    assert (load_face(tmp_path / "rgba.png", None, 6) == (10, 20, 30)).all()


def test_load_face_reduced_jpeg_decoding_matches_full_decoding(tmp_path: Path) -> None:
    # A large photo with a smooth gradient: the face box is decoded at reduced scale.
    ramp = np.linspace(0, 255, 800, dtype=np.float32)
    pixels = np.stack(
        [np.tile(ramp, (600, 1)), np.tile(ramp[:600, None], (1, 800)), np.full((600, 800), 90)],
        axis=-1,
    ).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    box = np.array([100, 50, 400, 480])
    fast = load_face(path, box, 32).astype(int)
    with Image.open(path) as image:
        reference = np.asarray(
            image.convert("RGB").crop((100, 50, 500, 530)).resize((32, 32), Image.BILINEAR)
        ).astype(int)
    assert np.abs(fast - reference).mean() < 3


def test_unreadable_and_missing_images_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(DatasetError, match=r"cannot decode image .*garbage.jpg"):
        load_face(garbage, None, 8)
    truncated = tmp_path / "truncated.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"cannot decode image .*truncated.jpg"):
        load_face(truncated, None, 8)
    with pytest.raises(DatasetError, match=r"image missing: .*gone.jpg"):
        load_face(tmp_path / "gone.jpg", None, 8)


def test_lazy_images_is_a_sequence_of_faces(tmp_path: Path) -> None:
    ds = load_rafdb(make_rafdb(tmp_path / "raf"))
    lazy = LazyImages(ds.test, 10)
    assert len(lazy) == 2 and lazy.shape == (2, 10, 10, 3)
    assert np.array_equal(lazy[-1], lazy[1])
    assert np.array_equal(lazy[np.int64(0)], load_face(ds.test.paths[0], None, 10))
    assert len(list(lazy)) == 2  # iteration stops at the end
    with pytest.raises(IndexError):
        lazy[2]
