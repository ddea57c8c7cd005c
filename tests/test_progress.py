"""No silent wait: synthfer's generation and the decoding into the cache report counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.data.cache import decoded_images
from harness.data.rafdb import load_rafdb
from harness.data.synthfer import SynthConfig, generate_synthfer
from harness.progress import counted


def test_counted_waits_report_counts_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with counted("rendering", 8, unit="faces") as advance:
        for _ in range(8):
            advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "rendering: 0/8 faces",
        "rendering: 2/8 faces",
        "rendering: 4/8 faces",
        "rendering: 6/8 faces",
        "rendering: 8/8 faces, done",
    ]


def test_generation_and_decoding_say_how_far_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SynthConfig(train_size=28, test_size=14, image_size=32)
    generate_synthfer(tmp_path / "synthfer", config, workers=2)
    err = capsys.readouterr().err
    assert "synthfer: rendering 42 faces" in err and "42/42 faces, done" in err
    dataset = load_rafdb(tmp_path / "synthfer", name="synthfer")
    decoded_images(dataset.train, 16, tmp_path / "cache", key="synthfer-train", workers=1)
    err = capsys.readouterr().err
    assert "decoding synthfer-train" in err and "28/28 images, done" in err
