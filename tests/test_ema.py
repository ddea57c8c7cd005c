"""The EMA model: its warm-up (so a short schedule evaluates a trained model) and the warning
for a horizon longer than a fair share of the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.config import compose_config
from harness.ema import build_decay_probe, build_ema, decay_at, ema_horizon_warning
from harness.plan import build_plan
from harness.worker import run_spec


def test_warm_up_decay_follows_the_documented_rule() -> None:
    probe = build_decay_probe({"decay": 0.999, "warmup": True, "warmup_power": 2 / 3})
    assert probe.get_decay(0) == probe.get_decay(1) == 0.0  # the first updates copy the student
    for step in (2, 10, 500, 20_000):
        assert probe.get_decay(step) == pytest.approx(min(0.999, 1 - step ** (-2 / 3)))
    assert probe.get_decay(40_000) == 0.999  # capped at ema.decay once 1 - s^(-2/3) passes it
    mean_teacher = build_decay_probe({"decay": 0.99, "warmup": True, "warmup_power": 1.0})
    assert [mean_teacher.get_decay(s) for s in (2, 4, 99, 500)] == pytest.approx(
        [1 / 2, 3 / 4, 98 / 99, 0.99]
    )
    plain = build_decay_probe({"decay": 0.999, "warmup": False, "warmup_power": 1.0})
    assert [plain.get_decay(s) for s in (1, 2, 50)] == [0.0, 0.999, 0.999]


@pytest.mark.parametrize(
    "ema_cfg",
    [
        {"decay": 0.999, "warmup": True, "warmup_power": 2 / 3},
        {"decay": 0.99, "warmup": True, "warmup_power": 1.0},
        {"decay": 0.9, "warmup": False, "warmup_power": 0.6667},
    ],
)
def test_the_torch_free_decay_is_timms(ema_cfg: dict[str, object]) -> None:
    """Planning states the warning without importing torch: its decay is timm's."""
    probe = build_decay_probe(ema_cfg)
    for step in (0, 1, 2, 3, 10, 99, 500, 20_000, 40_000):
        assert decay_at(ema_cfg, step) == pytest.approx(probe.get_decay(step), abs=1e-12), step


def test_warm_up_is_on_by_default_and_part_of_the_config() -> None:
    ema = compose_config([])["ema"]
    assert ema["warmup"] is True and ema["warmup_power"] == pytest.approx(2 / 3, abs=1e-4)
    model = torch.nn.Linear(2, 2)
    assert build_ema(model, ema).use_warmup
    (on,) = build_plan("supervised", "10%", "0", "synthfer", [])
    (off,) = build_plan("supervised", "10%", "0", "synthfer", ["ema.warmup=false"])
    assert on.run_id != off.run_id, "the warm-up is part of the run's identity"


def test_horizon_warning_fires_only_where_the_ema_outlasts_the_run() -> None:
    warning = ema_horizon_warning({"decay": 0.999, "warmup": True, "warmup_power": 2 / 3}, 600)
    assert warning is not None
    assert "ema.decay" in warning and "train.steps" in warning and "~1000 steps" in warning
    no_warmup = ema_horizon_warning({"decay": 0.999, "warmup": False, "warmup_power": 1.0}, 600)
    assert no_warmup is not None and "ema.warmup=true" in no_warmup
    for dataset in ("synthfer", "folder", "rafdb", "affectnet7"):
        cfg = compose_config([f"dataset={dataset}", "dataset.root=/nowhere"])
        assert ema_horizon_warning(cfg["ema"], cfg["train"]["steps"]) is None, dataset


@pytest.mark.slow
@pytest.mark.parametrize("warmup", [True, False])
def test_a_short_schedule_evaluates_a_trained_ema_model(
    warmup: bool,
    separable_folder: Path,
    cache_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Issue 10's case, cheaper: 50 labelled images, the default decay 0.999, 30 steps. Without
    the warm-up the EMA model is still the student of step 1 (chance, 33%) while the student
    itself is right on every test image; with it the two agree."""
    overrides = [
        f"dataset.root={separable_folder}", "backbone=fer_cnn", "data.image_size=24",
        "data.batch_size=16", "data.num_workers=0", f"data.cache_dir={cache_dir}",
        "train.steps=30", "train.eval_every=30", "train.threads=1", f"ema.warmup={warmup}",
    ]  # fmt: skip
    (spec,) = build_plan("supervised", "50", "0", "folder", overrides)
    result = run_spec(spec, tmp_path, show_progress=False)
    assert "warning" not in capfd.readouterr().err, "the grid warns, once; not each run"
    ema, student = result["metrics"]["top1"], result["student_metrics"]["top1"]
    assert student > 90
    if warmup:
        assert abs(ema - student) <= 5
    else:
        assert ema < student - 40, "without the warm-up the evaluated model did not learn"


def test_a_grid_states_the_horizon_warning_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = ["--methods", "supervised,fixmatch", "--seeds", "0-2", "--results-dir", str(tmp_path)]
    assert main(["run", "--dry-run", *grid, "train.steps=600", "ema.decay=0.999"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("~1000 steps") == 1 and "warning (every run to train)" in out
    sweep = "train.steps=600,20000"  # one configuration warned of, the other not
    assert main(["run", "--dry-run", *grid, sweep, "ema.decay=0.999"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("~1000 steps") == 1 and "warning (6 of the runs to train)" in out


def test_horizon_warning_draws_nothing_from_the_global_rng() -> None:
    """The engine computes the warning after a resumed run's RNG state is restored: drawing
    from it (a probe model's weight initialisation) broke exact resume once."""
    before = torch.get_rng_state()
    assert ema_horizon_warning({"decay": 0.999, "warmup": True, "warmup_power": 2 / 3}, 600)
    assert torch.equal(before, torch.get_rng_state())
