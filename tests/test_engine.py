"""The training engine: schedule, optimiser groups, learning, and exact resume after a kill."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import stop_after

from harness.checkpoint import read_checkpoint
from harness.config import compose_config
from harness.engine import CHECKPOINT_NAME, TrainingStopped
from harness.optim import build_optimizer, cosine_with_warmup
from harness.plan import build_plan
from harness.registry import available_methods, get_method, register_method
from harness.store import RunBusyError, claim_run, has_result, run_dir
from harness.worker import run_spec


def test_cosine_schedule_with_warmup() -> None:
    factor = cosine_with_warmup(warmup_steps=4, total_steps=104, num_cycles=7 / 16)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(104) == pytest.approx(math.cos(7 * math.pi / 16))
    assert factor(54) == pytest.approx(math.cos(7 * math.pi / 32))


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    cfg = compose_config([])["optim"]
    groups = build_optimizer(model, cfg).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert groups[0]["weight_decay"] == cfg["weight_decay"]
    assert groups[1]["weight_decay"] == 0.0


def _interruptible(base: str) -> str:
    """Register (once) a test-only copy of ``base`` that raises KeyboardInterrupt at a chosen
    step, the way a killed process stops; it lives outside methods/, like a user's plugin."""
    name = f"test_interruptible_{base}"
    if name in available_methods():
        return name
    base_cls = get_method(base).cls

    def training_loss(self, ctx):
        if ctx.step == type(self).stop_at:
            raise KeyboardInterrupt
        return base_cls.training_loss(self, ctx)

    defaults = {
        k: v for k, v in compose_config([f"method={base}"])["method"].items() if k != "name"
    }
    cls = type(
        name,
        (base_cls,),
        {"stop_at": None, "training_loss": training_loss, "default_config": defaults},
    )
    register_method(name, f"test-only interruptible {base}")(cls)
    return name


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tiny: list[str], tmp_path: Path) -> None:
    """A process killed mid-run (here: KeyboardInterrupt at step 25) resumes from its last
    periodic checkpoint. One method with rich state suffices here: every method's exact resume
    is tests/test_method_contract.py's."""
    name = _interruptible("dta_snl")
    (spec,) = build_plan(name, "25%", "0", "synthfer", tiny)
    cls = get_method(name).cls

    uninterrupted = run_spec(spec, tmp_path / "a", show_progress=False)

    cls.stop_at = 25
    try:
        with pytest.raises(KeyboardInterrupt):
            run_spec(spec, tmp_path / "b", show_progress=False)
    finally:
        cls.stop_at = None
    checkpoint = run_dir(tmp_path / "b", spec) / CHECKPOINT_NAME
    assert read_checkpoint(checkpoint)["step"] == 20
    resumed = run_spec(spec, tmp_path / "b", show_progress=False)

    assert resumed["timing"]["resumed_from_step"] == 20
    assert uninterrupted["timing"]["resumed_from_step"] is None
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["evaluations"] == uninterrupted["evaluations"]
    assert resumed["diagnostics"] == uninterrupted["diagnostics"]
    assert resumed["method_summary"] == uninterrupted["method_summary"]
    assert not checkpoint.exists(), "the checkpoint is removed once the result is written"


@pytest.mark.slow
def test_a_stop_request_saves_that_step_and_resumes_to_the_same_result(
    tiny: list[str], tmp_path: Path
) -> None:
    """What a SLURM job does at its requeue signal: the engine stops after the step it is on,
    with a checkpoint of exactly that step (not the last periodic one), and the rerun resumes
    there to the uninterrupted result."""
    (spec,) = build_plan("supervised", "25%", "0", "synthfer", tiny)  # checkpoint_every=10
    uninterrupted = run_spec(spec, tmp_path / "a", show_progress=False)

    with pytest.raises(TrainingStopped) as stopped:
        run_spec(spec, tmp_path / "b", show_progress=False, stop_requested=stop_after(13))
    assert stopped.value.step == 13
    work_dir = run_dir(tmp_path / "b", spec)
    assert read_checkpoint(work_dir / CHECKPOINT_NAME)["step"] == 13
    assert not has_result(tmp_path / "b", spec)
    resumed = run_spec(spec, tmp_path / "b", show_progress=False, stop_requested=lambda: False)

    assert resumed["timing"]["resumed_from_step"] == 13
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["evaluations"] == uninterrupted["evaluations"]
    events = [json.loads(line) for line in (work_dir / "metrics.jsonl").open() if "event" in line]
    assert {"event": "stop", "step": 13} in events and {"event": "resume", "step": 13} in events


@pytest.mark.slow
def test_training_learns_and_logs(separable_folder: Path, cache_dir: Path, tmp_path: Path) -> None:
    overrides = [
        f"dataset.root={separable_folder}", "backbone=fer_cnn", "data.image_size=24",
        "data.batch_size=16", "data.num_workers=0", f"data.cache_dir={cache_dir}", "train.steps=60",
        "train.eval_every=30", "train.log_every=5", "ema.decay=0.9",
    ]  # fmt: skip
    (spec,) = build_plan("supervised", "100%", "0", "folder", overrides)
    result = run_spec(spec, tmp_path, show_progress=False)
    log = [json.loads(line) for line in (run_dir(tmp_path, spec) / "metrics.jsonl").open()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 60 // 5
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:2]) / 2, "loss falls"
    # Chance is 1/3; the classes are easy, so the model must be far above it.
    assert result["metrics"]["top1"] > 80, "accuracy rises far above chance"
    assert result["timing"]["images_per_second"] > 0
    assert result["split"]["num_labelled"] == 180


@pytest.mark.slow
def test_a_run_in_training_elsewhere_is_not_trained_twice(tiny: list[str], tmp_path: Path) -> None:
    (spec,) = build_plan("supervised", "25%", "0", "synthfer", tiny)
    busy = pytest.raises(RunBusyError, match="already being trained")
    with claim_run(run_dir(tmp_path, spec)), busy:  # as if another process were training it
        run_spec(spec, tmp_path, show_progress=False)
    assert not has_result(tmp_path, spec)
    assert not (run_dir(tmp_path, spec) / CHECKPOINT_NAME).exists(), "nothing was trained"
