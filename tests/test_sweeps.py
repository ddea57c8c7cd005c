"""Override keys are checked, comma lists sweep like Hydra's multirun, and the plan table says
how many images each run labels."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from helpers import bench as bench_at_width

from harness.cli import main
from harness.errors import ConfigError
from harness.plan import build_plan, expand_sweeps

# Rich wraps to the terminal width: a fixed one keeps each message on the lines asserted.
bench = functools.partial(bench_at_width, columns=250)


@pytest.mark.parametrize("override", ["optim.lrr=0.01", "+optim.lrr=0.01", "~optim.lrr"])
def test_a_key_no_config_defines_is_refused_with_the_closest_one(
    override: str, tmp_path: Path
) -> None:
    proc = bench("run", "--methods", "fixmatch", "--dry-run", override, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "no config defines the key 'optim.lrr'; did you mean optim.lr?" in lines[0]
    assert not (tmp_path / "results").exists()


def test_keys_are_checked_against_the_configs_the_run_composes() -> None:
    # launcher.partition exists in the slurm launcher's config only.
    build_plan("supervised", "10%", "0", "synthfer", ["launcher=slurm", "launcher.partition=x"])
    with pytest.raises(ConfigError, match=r"'launcher\.partition'"):
        build_plan("supervised", "10%", "0", "synthfer", ["launcher.partition=x"])
    # dataset.generate.* are synthfer's settings, defaults included; rafdb has none.
    build_plan("supervised", "10%", "0", "synthfer", ["+dataset.generate.noise_std=5"])
    with pytest.raises(ConfigError, match=r"'dataset\.generate\.noise_std'"):
        build_plan(
            "supervised", "10%", "0", "rafdb", ["dataset.root=/x", "+dataset.generate.noise_std=5"]
        )


@pytest.mark.parametrize("override", ["seed=3", "labels=5%", "method=fixmatch", "dataset=rafdb"])
def test_what_the_grid_flags_set_is_not_an_override(override: str) -> None:
    with pytest.raises(ConfigError, match=r"the grid sets it; use --"):
        build_plan("supervised", "10%", "0", "synthfer", [override])


def test_a_free_form_namespace_takes_any_key() -> None:
    (spec,) = build_plan(
        "supervised", "10%", "0", "synthfer",
        ["launcher=slurm", "+launcher.additional_parameters.constraint=a100"],
    )  # fmt: skip
    assert spec.config["launcher"]["additional_parameters"] == {"constraint": "a100"}


def test_comma_lists_expand_like_hydra_multirun_but_quotes_and_lists_do_not() -> None:
    points = expand_sweeps(["optim.lr=0.01,0.03", "x='a,b'", "+y=[1,2]", "ema.decay=0.9,0.99"])
    assert [p.changes for p in points] == [
        ("optim.lr=0.01", "ema.decay=0.9"),
        ("optim.lr=0.01", "ema.decay=0.99"),
        ("optim.lr=0.03", "ema.decay=0.9"),
        ("optim.lr=0.03", "ema.decay=0.99"),
    ]
    assert points[1].overrides == ("optim.lr=0.01", "x='a,b'", "+y=[1,2]", "ema.decay=0.99")
    assert expand_sweeps(["+z=1,2"])[1].overrides == ("+z=2",)


def test_a_sweep_over_two_keys_is_the_grid_of_its_configurations() -> None:
    specs = build_plan(
        "supervised,fixmatch", "10%,25/class", "0,1", "synthfer",
        ["optim.lr=0.01,0.03", "ema.decay=0.9,0.99", "train.steps=7"],
    )  # fmt: skip
    assert len(specs) == 4 * 2 * 2 * 2
    assert len({s.run_id for s in specs}) == len(specs)
    cells = {(s.method, s.sweep, s.labels, s.seed) for s in specs}
    assert len(cells) == len(specs)
    for spec in specs:
        lr, decay = (change.split("=")[1] for change in spec.sweep)
        assert spec.config["optim"]["lr"] == float(lr)
        assert spec.config["ema"]["decay"] == float(decay)
        assert spec.config["train"]["steps"] == 7
    # A point of a sweep is the same run as the same settings given without a sweep.
    (alone,) = build_plan(
        "fixmatch", "10%", "1", "synthfer", ["optim.lr=0.03", "ema.decay=0.9", "train.steps=7"]
    )
    twin = next(s for s in specs if s.run_id == alone.run_id)
    assert twin.sweep == ("optim.lr=0.03", "ema.decay=0.9") and alone.sweep == ()


def test_dry_run_shows_the_expansion_and_the_labelled_images(tmp_path: Path) -> None:
    proc = bench(
        "run", "--methods", "fixmatch", "--labels", "10%,40,25/class", "--dry-run",
        "optim.lr=0.01,0.03", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "6 runs, 2 configurations swept, 6 to run" in out
    assert "per class (Sur/Fea/Dis/Hap/Sad/Ang/Neu)" in out
    rows = [line for line in out.splitlines() if "fixmatch__" in line]
    assert len(rows) == 6
    assert sum("fixmatch (optim.lr=0.01)" in row for row in rows) == 3
    # synthfer's 6,000 training faces in RAF-DB's proportions: 10% stratified, 40 balanced.
    forty = next(row for row in rows if "fixmatch__40__" in row)
    assert "40 labelled images in total" in forty and "6/6/6/6/6/5/5" in forty
    per_class = next(row for row in rows if "25perclass" in row)
    assert "175" in per_class and "25/25/25/25/25/25/25" in per_class
    ten = next(row for row in rows if "10pct" in row)
    assert "599" in ten


@pytest.mark.slow
def test_each_configuration_of_a_sweep_is_its_own_leaderboard_row(
    tiny: list[str], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    sweep = ["train.steps=4,6", "optim.lr=0.01,0.03"]
    args = ["--methods", "supervised", "--labels", "25%", "--results-dir", str(results)]
    assert main(["run", *args, "--no-progress", *tiny, *sweep]) == 0
    files = sorted((results / "synthfer").glob("*.json"))
    assert len(files) == 4
    stored = {tuple(json.loads(f.read_text())["sweep"]) for f in files}
    assert stored == {
        (f"train.steps={s}", f"optim.lr={lr}") for s in (4, 6) for lr in ("0.01", "0.03")
    }
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    board = (results / "leaderboard.md").read_text()
    for steps in (4, 6):
        for lr in ("0.01", "0.03"):
            label = f"supervised (train.steps={steps}, optim.lr={lr})"
            rows = [line for line in board.splitlines() if line.startswith(f"| {label} ")]
            assert rows and "(1)" in rows[0], (label, board)


@pytest.mark.slow
def test_the_plan_table_reads_a_folder_datasets_class_sizes(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "faces"
    for split, sizes in (("train", {"calm": 9, "glad": 4, "sour": 2}), ("test", {"calm": 1})):
        for name, count in sizes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8)).save(root / split / name / f"{i}.jpg")
    proc = bench(
        "run", "--methods", "supervised", "--labels", "50%,3", "--dataset", "folder",
        f"dataset.root={root}", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per class (cal/gla/sou)" in proc.stdout
    half = next(line for line in proc.stdout.splitlines() if "__50pct__" in line)
    assert half.split()[3:5] == ["7", "4/2/1"]  # round(4.5)=4 (half to even), round(1)=1
    three = next(line for line in proc.stdout.splitlines() if "__3__" in line)
    assert "3 labelled images in total" in three and "1/1/1" in three
    gone = bench(
        "run", "--methods", "supervised", "--dataset", "folder",
        f"dataset.root={tmp_path / 'nowhere'}", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    # A run's identity is its dataset's content (issue 15), so even a dry run must read the
    # folder: a missing one is a config error naming it, not a plan with made-up ids.
    assert gone.returncode == 2, gone.stdout + gone.stderr
    assert "nowhere" in gone.stdout + gone.stderr and "Traceback" not in gone.stdout + gone.stderr
