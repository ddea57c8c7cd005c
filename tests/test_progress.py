"""No silent wait: synthfer's generation and the decoding into the cache report counts, and
training redirected to a log prints a progress line at a steady interval, and its log lines
whole."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness.data.cache import decoded_images
from harness.data.rafdb import load_rafdb
from harness.data.synthfer import SynthConfig, generate_synthfer
from harness.progress import PeriodicLines, counted

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_count_crossing_two_quarters_at_once_is_said_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with counted("drawing", 2, unit="sections") as advance:  # 1/2 is both ¼ and ½ of the way
        advance(1)
        advance(1)
    lines = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == [
        "drawing: 0/2 sections",
        "drawing: 1/2 sections",
        "drawing: 2/2 sections, done",
    ]


def test_generation_and_decoding_say_how_far_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SynthConfig(train_size=28, test_size=14, image_size=32, seed=1234)
    generate_synthfer(tmp_path / "synthfer", config, workers=2)
    err = capsys.readouterr().err
    assert "synthfer: rendering 42 faces" in err and "42/42 faces, done" in err
    dataset = load_rafdb(tmp_path / "synthfer", name="synthfer")
    decoded_images(dataset.train, 16, tmp_path / "cache", key="synthfer-train", workers=1)
    err = capsys.readouterr().err
    assert "decoding synthfer-train" in err and "28/28 images, done" in err


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_periodic_lines_say_count_rate_and_time_left_at_a_steady_interval() -> None:
    out, clock = io.StringIO(), _Clock()
    lines = PeriodicLines(Console(file=out), "run", 1000, 200, every_s=30, clock=clock)
    for done in range(201, 1001):
        clock.now += 0.5  # two steps a second
        lines.update(done, "loss 0.412")
    printed = out.getvalue().splitlines()
    assert len(printed) == 400 // 30  # one line every 30 s of the 400 s
    first = printed[0].split("] ", 1)[1]
    assert first == "run: step 260/1000 (26%) · 2 steps/s · 6:10 left · loss 0.412"
    on_a_terminal = io.StringIO()
    bar = PeriodicLines(Console(file=on_a_terminal, force_terminal=True), "run", 9, 0, 0.001)
    bar.update(5)
    assert on_a_terminal.getvalue() == "", "a terminal has the live bar"


@pytest.mark.slow
def test_training_into_a_log_file_prints_progress_lines(tiny: list[str], tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with log.open("w") as handle:  # a file, as in `bench run ... > train.log 2>&1`
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "--methods", "supervised",
             "--seeds", "0-1", "--results-dir", str(tmp_path / "results"), *tiny,
             "train.steps=60", "train.progress_every_s=0.3"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "40"},
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    # Log lines are whole at any COLUMNS: not folded at the width, padded, or given file:line.
    assert re.search(
        r"^\[\d\d:\d\d:\d\d\] supervised__10pct__seed0__\w+: synthfer \(280 train / "
        r"140 test\), \d+ labelled, method supervised$",
        text,
        re.M,
    ), text
    stamped = [line for line in text.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] ", line)]
    assert stamped and not [line for line in stamped if line != line.rstrip()], text
    assert "worker.py:" not in text and "engine.py:" not in text, text
    steps = [
        int(m.group(1))
        for m in re.finditer(r"supervised__10pct__seed0__\w+: step (\d+)/60 \(\d+%\) · [\d.]+ "
                             r"steps/s · [\d:]+ left · loss", text)
    ]  # fmt: skip
    assert len(steps) >= 2 and steps == sorted(steps), text
    # ema.decay=0.9 outlasts a tenth of 60 steps: said once for the grid, not in each run.
    assert " ".join(text.split()).count("averages the student over ~10 steps") == 1, text
