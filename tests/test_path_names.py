"""Names that become path components are checked at planning: nothing is written outside the
results folder and the cache, whatever a config, an override or a plugin names."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.files import check_free_text, check_plain_name
from harness.plan import build_plan
from harness.registry import _CLASSES, _REGISTRY, register_method

HOSTILE = ["..", "../../etc", "a/b", "a\\b", ".hidden", "x\x00y", "x\ny", "/abs", "", "a..b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_plain_names_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.name=.* cannot name a file or folder"):
        check_plain_name(value, "dataset.name")


@pytest.mark.parametrize("value", ["synthfer", "affectnet7", "my_set-2.v1", "a+b=c,d"])
def test_ordinary_names_pass(value: str) -> None:
    assert check_plain_name(value, "dataset.name") == value


@pytest.mark.parametrize("value", ["../x", "a/b", "a\\b", ".x", "a\tb", "x..y"])
def test_hostile_tags_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"tag=.* may not contain"):
        check_free_text(value, "tag")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("dataset.name=../../outside", "dataset.name"),
        ("dataset.name=.hidden", "dataset.name"),
        ("tag=../escape", "tag"),
        ("tag=a/b", "tag"),
    ],
)
def test_planning_refuses_hostile_config_names(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"{named}="):
        build_plan("supervised", "10%", "0", "synthfer", [override])


def test_a_hostile_pretraining_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"pretrain\.name="):
        build_plan("supervised", "10%", "0", "synthfer", ["+pretrain=synth_faces",
                                                          "pretrain.name=../../x"])  # fmt: skip


@pytest.mark.parametrize("methods", ["../evil", "fixmatch/..", "fixmatch[../x=1]"])
def test_hostile_method_labels_are_refused(methods: str) -> None:
    with pytest.raises(ConfigError):
        build_plan(methods, "10%", "0", "synthfer", [])


def test_a_plugin_with_a_hostile_name_is_refused_at_planning() -> None:
    from methods.supervised import Supervised

    register_method("..", "a plugin whose name is a path")(type("Dots", (Supervised,), {}))
    try:
        with pytest.raises(ConfigError, match=r"method='\.\.' cannot name a file or folder"):
            build_plan("..", "10%", "0", "synthfer", [])
    finally:
        _CLASSES.pop("..", None)
        _REGISTRY.pop("..", None)


def test_bench_run_refuses_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--methods", "supervised", "--labels", "10%", "--seeds", "0",
                 "--results-dir", str(tmp_path / "results"), "--dry-run",
                 "dataset.name=../../outside"])  # fmt: skip
    captured = capsys.readouterr()
    err = (captured.out + captured.err).strip()
    assert code == 2 and len(err.splitlines()) == 1 and "dataset.name=" in err, err
    assert not (tmp_path / "outside").exists() and not (tmp_path / "results").exists()
