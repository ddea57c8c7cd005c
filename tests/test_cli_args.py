"""Command-line words: overrides may stand anywhere among the flags, as Hydra's do; a
missing weights file is refused at planning."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.arguments import parse_with_overrides as _parse
from harness.cli import build_parser, main
from harness.throughput import parser as speed_parser


def test_overrides_after_a_flag_join_those_before_it() -> None:
    words = ["run", "--methods", "fixmatch", "train.steps=20", "--results-dir", "out",
             "train.device=cpu", "--seeds", "0-2", "~ema.warmup"]  # fmt: skip
    args = _parse(build_parser(), words)
    assert args.overrides == ["train.steps=20", "train.device=cpu", "~ema.warmup"]
    assert (args.methods, args.seeds, str(args.results_dir)) == ("fixmatch", "0-2", "out")


def test_bench_speed_takes_overrides_after_its_flags_too() -> None:
    words = ["--device", "cpu", "backbone=resnet18", "--steps", "1", "data.batch_size=16"]
    args = _parse(speed_parser(), words)
    assert args.overrides == ["backbone=resnet18", "data.batch_size=16"] and args.steps == 1


def test_an_unknown_flag_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _parse(build_parser(), ["run", "--methods", "fixmatch", "a=1", "--keep-weights", "b=2"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --keep-weights" in capsys.readouterr().err


def test_a_command_without_overrides_refuses_a_stray_word() -> None:
    with pytest.raises(SystemExit):
        _parse(build_parser(), ["leaderboard", "train.steps=20"])


def test_a_missing_weights_file_is_refused_at_planning(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "resnet18_msceleb.pth"
    args = ["run", "--dry-run", "--methods", "supervised", "--results-dir", str(tmp_path), *tiny]
    assert main([*args, f"backbone.weights={missing}"]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert f"backbone.weights={missing}: no such file" in said
    assert "Traceback" not in said
