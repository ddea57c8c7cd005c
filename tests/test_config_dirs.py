"""``--config-dir``: a folder of the user's own config options beside the built-in ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import config
from harness.cli import main
from harness.errors import ConfigError
from harness.plan import build_plan

CLUSTER = """# A cluster's settings, on top of the built-in slurm launcher.
defaults:
  - slurm
  - _self_

partition: gpu-a100
cpus_per_task: 8
"""
DATASET = """# @package _global_
defaults:
  - synthfer
  - _self_

dataset:
  generate:
    train_size: 700
"""


@pytest.fixture
def user_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user config folder with a launcher and a dataset option; none added when it ends."""
    monkeypatch.setattr(config, "_user_dirs", [])
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher" / "mycluster.yaml").write_text(CLUSTER)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "small.yaml").write_text(DATASET)
    yield tmp_path
    config._base_config.cache_clear()


def test_a_user_folder_adds_options_to_the_config_groups(user_configs: Path) -> None:
    config.add_config_dir(user_configs)
    assert "small" in config.group_options("dataset")
    (spec,) = build_plan("supervised", "10%", "0", "small", ["launcher=mycluster"])
    assert spec.config["dataset"]["generate"]["train_size"] == 700
    assert spec.config["launcher"]["name"] == "slurm"
    assert spec.config["launcher"]["partition"] == "gpu-a100"
    assert spec.config["launcher"]["time_min"] == 60  # from the built-in slurm.yaml


def test_the_cli_takes_config_dir(user_configs: Path, tmp_path: Path) -> None:
    args = ["run", "--methods", "supervised", "--dataset", "small", "--dry-run"]
    assert (
        main([*args, "--results-dir", str(tmp_path / "r"), "--config-dir", str(user_configs)]) == 0
    )


def test_a_name_the_harness_already_has_is_refused(user_configs: Path) -> None:
    (user_configs / "dataset" / "rafdb.yaml").write_text(DATASET)
    with pytest.raises(ConfigError, match=r"has the name of a built-in config"):
        config.add_config_dir(user_configs)
    with pytest.raises(ConfigError, match="no such folder"):
        config.add_config_dir(user_configs / "nope")
