"""Command-line words: overrides may stand anywhere among the flags, as Hydra's do."""

from __future__ import annotations

import pytest

from harness.cli import _parse, build_parser


def test_overrides_after_a_flag_join_those_before_it() -> None:
    words = ["run", "--methods", "fixmatch", "train.steps=20", "--results-dir", "out",
             "train.device=cpu", "--seeds", "0-2", "~ema.warmup"]  # fmt: skip
    args = _parse(build_parser(), words)
    assert args.overrides == ["train.steps=20", "train.device=cpu", "~ema.warmup"]
    assert (args.methods, args.seeds, str(args.results_dir)) == ("fixmatch", "0-2", "out")


def test_an_unknown_flag_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _parse(build_parser(), ["run", "--methods", "fixmatch", "a=1", "--keep-weights", "b=2"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --keep-weights" in capsys.readouterr().err


def test_a_command_without_overrides_refuses_a_stray_word() -> None:
    with pytest.raises(SystemExit):
        _parse(build_parser(), ["leaderboard", "train.steps=20"])
