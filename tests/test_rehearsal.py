"""A rehearsal of the pinned RAF-DB protocols on the CPU (issue 22 §6): RAF-DB in its official
layout with real JPEG files, a checkpoint shaped like the field's MS-Celeb-1M ResNet-18 file,
each protocol through `bench run` with only its size shrunk, then `bench leaderboard`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from harness.cli import main

# Per class (Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral): enough for
# adacm:100 (Fear 10, the others 15), plus a few test images of each.
TRAIN_PER_CLASS = (16, 11, 16, 16, 16, 16, 16)
TEST_PER_CLASS = 2
SHRUNK = [
    "data.image_size=32",
    "train.steps=4",
    "train.eval_every=2",
    "train.device=cpu",
    "train.threads=1",
    "data.num_workers=0",
]


def make_rafdb(root: Path) -> Path:
    """RAF-DB as it ships: EmoLabel/list_patition_label.txt ('name label', labels 1-7) and
    Image/aligned/<name>_aligned.jpg, 100x100 JPEG faces (here: noise, a tint per class)."""
    rng = np.random.default_rng(0)
    lines = []
    for split, counts in (("train", TRAIN_PER_CLASS), ("test", (TEST_PER_CLASS,) * 7)):
        number = 0
        for label, count in enumerate(counts, 1):
            for _ in range(count):
                number += 1
                name = f"{split}_{number:05d}.jpg"
                pixels = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
                pixels[..., label % 3] //= 2
                path = root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path, quality=90)
                lines.append(f"{name} {label}")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def make_msceleb_like_checkpoint(path: Path) -> Path:
    """The layout of resnet18_msceleb.pth (Ada-CM's models/backbone.py:18-19 loads it into
    torchvision's resnet18 under 'state_dict'): torchvision names, a 1000-way fc."""
    torch.manual_seed(0)
    torch.save({"state_dict": torchvision.models.resnet18(num_classes=1000).state_dict()}, path)
    return path


@pytest.mark.slow
def test_each_pinned_rafdb_protocol_runs_and_reports(tmp_path: Path, capsys) -> None:
    root = make_rafdb(tmp_path / "RAF-DB")
    weights = make_msceleb_like_checkpoint(tmp_path / "resnet18_msceleb.pth")
    results = tmp_path / "results"
    common = ["--dataset", "rafdb", "--data-root", str(root), "--results-dir", str(results)]
    common += ["--no-progress"]
    cache = [f"data.cache_dir={tmp_path / 'cache'}"]

    # Without the weights the protocol refuses before anything runs (exit 2, one line).
    refused = main(["run", "--methods", "adacm", "--labels", "adacm:100", *common,
                    "+experiment=rafdb_adacm", *SHRUNK, *cache])  # fmt: skip
    assert refused == 2
    said = capsys.readouterr()
    assert "backbone.weights is required" in said.out + said.err

    # Ada-CM's recipe, its split and 10% (where a published row exists), for two methods.
    assert main(["run", "--methods", "supervised,adacm", "--labels", "adacm:100,10%",
                 *common, "+experiment=rafdb_adacm", f"backbone.weights={weights}",
                 *SHRUNK, "data.batch_size=8", *cache]) == 0  # fmt: skip
    # USB's classic setting, its batch shrunk (μ = 7 kept).
    assert main(["run", "--methods", "fixmatch", "--labels", "perclass:3/2/3/3/3/3/3",
                 *common, "+experiment=usb_classic", *SHRUNK, "data.batch_size=4",
                 *cache]) == 0  # fmt: skip
    planned = capsys.readouterr().out
    assert "adacm:100 (Ada-CM's published split)" in planned and "15/10/15/15/15/15/15" in planned
    assert "expected device time" in planned

    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    board = (results / "leaderboard.md").read_text()
    adacm = board.split("## rafdb [rafdb-adacm]", 1)[1].split("\n## ", 1)[0]
    usb = board.split("## rafdb [usb-classic]", 1)[1].split("\n## ", 1)[0]
    # The protocol block says what ran: the weights, Ada-CM's optimiser, the split per class.
    assert "resnet18_msceleb.pth" in adacm and "adamw" in adacm
    assert "adacm:100: 100 (Surprise 15 · Fear 10 · Disgust 15 · Happiness 15" in adacm
    assert "(Surprise 3 · Fear 2 · Disgust 3" in usb and "sgd" in usb and "μ = 7" in usb
    # The best evaluation, labelled, and SSFER's published 10% row with the gap.
    assert "### best top-1 over evaluations (%, chosen on the test set)" in adacm
    assert "| **published**: SSFER | 85.07 |" in adacm
    assert "Δ" in adacm.split("**published**: SSFER", 1)[1]
