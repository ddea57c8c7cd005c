"""The pinned protocols of configs/experiment/: every value sourced, the weights they need
refused by name before anything runs, and what they set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.plan import build_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "experiment"
PINNED = ("rafdb_adacm", "affectnet_adacm", "usb_classic")


@pytest.mark.parametrize("name", PINNED)
def test_every_value_of_a_pinned_protocol_says_where_it_comes_from(name: str) -> None:
    """A line that sets a value carries a comment (its source, or that it has none), or sits
    under a comment block that gives it."""
    lines = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if re.match(r"^\s*[A-Za-z_]+:\s*\S", line) and not line.lstrip().startswith("#"):
            above = lines[number - 2].lstrip() if number > 1 else ""
            assert "#" in line or above.startswith("#"), f"{name}.yaml:{number}: {line!r}"


def test_rafdb_adacm_is_adacms_recipe(tmp_path: Path) -> None:
    (spec,) = build_plan(
        "adacm",
        "adacm:4000",
        "0",
        "rafdb",
        [f"dataset.root={tmp_path}", "+experiment=rafdb_adacm", "backbone.weights=/w.pth"],
    )
    cfg = spec.config
    assert cfg["backbone"]["name"] == "resnet18" and cfg["backbone"]["weights"] == "/w.pth"
    assert (cfg["data"]["image_size"], cfg["data"]["batch_size"]) == (224, 16)
    assert cfg["data"]["unlabelled_ratio"] == 1
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["weight_decay"]) == (
        "adamw",
        5e-4,
        0.02,
    )
    assert cfg["sched"]["num_cycles"] == 0.0  # a constant lr
    assert (cfg["train"]["steps"], cfg["train"]["eval_every"]) == (20 * 800, 800)
    assert (cfg["ema"]["decay"], cfg["ema"]["warmup"]) == (0.999, False)
    assert cfg["tag"] == "rafdb-adacm"


@pytest.mark.parametrize(
    ("dataset", "protocol"), [("rafdb", "rafdb_adacm"), ("affectnet8", "affectnet_adacm")]
)
def test_a_protocol_needing_weights_refuses_to_plan_without_them(
    dataset: str, protocol: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        build_plan(
            "fixmatch",
            "2000",
            "0",
            dataset,
            [f"dataset.root={tmp_path}", f"+experiment={protocol}"],
        )
    message = str(info.value)
    assert "backbone.weights is required" in message
    assert "resnet18_msceleb.pth" in message and "MS-Celeb-1M" in message


def test_usb_classic_needs_no_weights_and_is_usbs_fixmatch_recipe(tmp_path: Path) -> None:
    (spec,) = build_plan(
        "fixmatch", "4000", "0", "rafdb", [f"dataset.root={tmp_path}", "+experiment=usb_classic"]
    )
    cfg = spec.config
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["optim"]["nesterov"]) == (
        "sgd",
        0.03,
        True,
    )
    assert (cfg["data"]["batch_size"], cfg["data"]["unlabelled_ratio"]) == (64, 7)
    assert cfg["sched"]["num_cycles"] == 0.4375


@pytest.mark.parametrize(
    ("dataset", "protocol", "message"),
    [
        ("synthfer", "rafdb_adacm", "'rafdb-adacm' is for --dataset rafdb, not synthfer"),
        ("rafdb", "affectnet_adacm", "is for --dataset affectnet7 or affectnet8, not rafdb"),
    ],
)
def test_a_protocol_refuses_another_dataset(
    dataset: str, protocol: str, message: str, tmp_path: Path
) -> None:
    """Without --dataset rafdb, +experiment=rafdb_adacm would train its recipe on synthfer."""
    overrides = [f"dataset.root={tmp_path}", f"+experiment={protocol}", "backbone.weights=/w.pth"]
    if dataset == "synthfer":
        overrides = overrides[1:]
    with pytest.raises(ConfigError, match=message):
        build_plan("fixmatch", "10%", "0", dataset, overrides)


def test_the_dataset_check_is_not_part_of_the_run(tmp_path: Path) -> None:
    (spec,) = build_plan(
        "fixmatch", "10%", "0", "rafdb",
        [f"dataset.root={tmp_path}", "+experiment=rafdb_adacm", "backbone.weights=/w.pth"],
    )  # fmt: skip
    assert "for_datasets" not in spec.config
