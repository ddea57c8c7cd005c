"""The grid: method variants, seeds, config composition and stable run ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config import compose_config
from harness.errors import BenchError, ConfigError
from harness.plan import build_plan, parse_methods, parse_seeds, split_top_level


def test_split_top_level_keeps_variant_arguments_together() -> None:
    assert split_top_level("a, b[x=1,y=2],c") == ["a", "b[x=1,y=2]", "c"]


def test_method_variants_become_method_overrides() -> None:
    (variant,) = parse_methods("supervised[foo=1]")
    assert variant.name == "supervised"
    assert variant.overrides == ("foo=1",)
    assert variant.label == "supervised[foo=1]"


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(BenchError, match=r"unknown method 'nosuch'.*supervised"):
        parse_methods("supervised,nosuch")


def test_a_variant_may_only_change_settings_its_method_has() -> None:
    with pytest.raises(ConfigError) as err:
        build_plan("fixmatch,dta_snl[lamda_neg=0.5]", "10%", "0", "synthfer")
    message = str(err.value)
    assert "method variant 'dta_snl[lamda_neg=0.5]': dta_snl has no setting 'lamda_neg'" in message
    assert "lambda_neg" in message and "tau_neg" in message  # the settings it does have
    (known,) = build_plan("dta_snl[lambda_neg=0.5]", "10%", "0", "synthfer")
    assert known.config["method"]["lambda_neg"] == 0.5
    with pytest.raises(ConfigError, match=r"fixmatch has no setting '\+note'"):
        build_plan("fixmatch[+note=x]", "10%", "0", "synthfer")  # a dead key is no ablation


@pytest.mark.parametrize("text", ["supervised[", "super vised", "supervised[x]"])
def test_malformed_method_text_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_methods(text)


def test_seeds_accept_lists_and_ranges() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5") == [3, 4, 5]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert parse_seeds("2,0-2,2") == [2, 0, 1]  # each once, in the order first given
    with pytest.raises(ConfigError):
        parse_seeds("a")
    with pytest.raises(
        ConfigError, match=r"seed range '2-0' is empty: write it low-high, e\.g\. 0-2"
    ):
        parse_seeds("2-0")


def test_a_run_named_twice_is_planned_once() -> None:
    once = build_plan("supervised,fixmatch", "10%,25", "0-1", "synthfer", ["optim.lr=0.03"])
    twice = build_plan(
        "supervised, fixmatch,supervised",
        "10%,25,10%",
        "0,1,0-1",
        "synthfer",
        ["optim.lr=0.03,0.03"],
    )
    assert [s.run_id for s in twice] == [s.run_id for s in once]
    assert len(once) == 8


def test_a_variant_equal_to_its_method_is_refused() -> None:
    # p_cutoff 0.95 is FixMatch's default: the two rows would train one config twice.
    with pytest.raises(
        ConfigError, match=r"'fixmatch\[p_cutoff=0.95\]' and 'fixmatch' are the same"
    ):
        build_plan("fixmatch,fixmatch[p_cutoff=0.95]", "10%", "0", "synthfer")
    assert len(build_plan("fixmatch,fixmatch[p_cutoff=0.9]", "10%", "0", "synthfer")) == 2


def test_a_key_of_another_launcher_names_the_flag_that_selects_it() -> None:
    with pytest.raises(ConfigError) as err:
        build_plan("supervised", "10%", "0", "synthfer", ["launcher.partition=gpu"])
    assert "it is a setting of launcher slurm: add --launcher slurm" in str(err.value)
    (spec,) = build_plan(
        "supervised", "10%", "0", "synthfer", ["launcher=slurm", "launcher.partition=gpu"]
    )
    assert spec.config["launcher"]["partition"] == "gpu"
    with pytest.raises(ConfigError) as err:  # a typo gets the closest keys instead
        build_plan("supervised", "10%", "0", "synthfer", ["launcher.paralel=2"])
    assert "did you mean launcher.parallel" in str(err.value)


def test_plan_is_the_full_grid_with_stable_distinct_ids() -> None:
    specs = build_plan("supervised", "10%,100%", "0,1", "synthfer", ["train.steps=7"])
    assert [(s.labels, s.seed) for s in specs] == [("10%", 0), ("10%", 1), ("100%", 0), ("100%", 1)]
    assert len({s.run_id for s in specs}) == 4
    assert all(s.config["train"]["steps"] == 7 for s in specs)
    again = build_plan("supervised", "10%,100%", "0,1", "synthfer", ["train.steps=7"])
    assert [s.run_id for s in again] == [s.run_id for s in specs]


def test_non_semantic_settings_do_not_change_the_run_id() -> None:
    (a,) = build_plan("supervised", "10%", "0", "synthfer", ["data.num_workers=0"])
    (b,) = build_plan("supervised", "10%", "0", "synthfer", ["data.num_workers=4"])
    (c,) = build_plan("supervised", "10%", "0", "synthfer", ["optim.lr=0.1"])
    assert a.run_id == b.run_id
    assert a.run_id != c.run_id


def test_dataset_sets_its_own_scale() -> None:
    cfg = compose_config(["dataset=rafdb", "dataset.root=/data/RAF-DB"])
    assert cfg["backbone"]["name"] == "resnet18"
    assert cfg["data"]["image_size"] == 224


def test_missing_dataset_root_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match=r"dataset.root.*EmoLabel"):
        compose_config(["dataset=rafdb"])


def test_bad_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchkey"):
        compose_config(["train.nosuchkey=1"])


def test_unknown_dataset_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'.*synthfer"):
        build_plan("supervised", "10%", "0", "imagenet")


def test_every_generator_setting_is_part_of_the_run() -> None:
    (spec,) = build_plan("supervised", "10%", "0", "synthfer")
    generate = spec.config["dataset"]["generate"]
    assert generate["occlusion_prob"] == 0.25  # a default that no config file names
    assert spec.config["dataset"]["generator_version"] >= 1
    (harder,) = build_plan("supervised", "10%", "0", "synthfer", ["+dataset.generate.noise_std=30"])
    assert harder.run_id != spec.run_id


def test_unknown_generator_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'dataset.generate.colour'; did you mean"):
        build_plan("supervised", "10%", "0", "synthfer", ["+dataset.generate.colour=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.generate.train_size=abc", "train_size must be an integer, got 'abc'"),
        ("+dataset.generate.clutter=true", "clutter must be a number, got True"),
        ("+pretrain=synth_faces pretrain.faces.identities=x", "identities must be an integer"),
    ],
)
def test_a_generator_setting_of_the_wrong_type_is_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plan("supervised", "10%", "0", "synthfer", override.split())


def test_a_split_with_a_count_per_class_of_another_dataset_is_refused_at_planning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every run would fail on it; the config tells the class count before any run starts.
    args = ["run", "--methods", "supervised", "--dry-run", "--results-dir", str(tmp_path / "r")]
    assert main([*args, "--labels", "10%,perclass:1/2"]) == 2
    out = capsys.readouterr().out
    assert out.strip() == (
        "error: --labels perclass:1/2: 2 counts for a dataset of 7 classes; give one count per "
        "class, in the dataset's class order"
    )
    assert not (tmp_path / "r").exists()
    root = f"dataset.root={tmp_path}"
    assert main([*args, "--labels", "adacm:100", "--dataset", "affectnet8", root]) == 2
    out = capsys.readouterr().out  # ":100:" printed as such, not as rich's emoji
    assert out.startswith("error: --labels adacm:100: 7 counts for a dataset of 8 classes"), out
    # What only the data can tell stays with the run: more labels than training images.
    assert len(build_plan("supervised", "perclass:1/2/3/4/5/6/7,100000", "0", "synthfer")) == 2
    (folder,) = build_plan("supervised", "perclass:1/2", "0", "folder", [root])
    assert folder.labels == "perclass:1/2"  # a folder's classes: known once it is read
