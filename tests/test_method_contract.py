"""The method contract, held for every method the registry lists — the built-in ones and a
plugin from another installed package — as timm runs one test over every registered model.

For each method: its defaults come from one place and it reads every one of them strictly; one
step on a tiny batch gives a finite loss whose gradients reach the student and not the
teacher; its state survives a checkpoint round trip; a run stopped at step k and resumed ends
with exactly the metrics, evaluations, diagnostics and summary of an uninterrupted one.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import stop_after
from plugin_package import PLUGIN_METHOD, PLUGIN_MODULE, register_plugin_in_this_process
from torch import Tensor, nn

from harness.config import config_dir, group_options
from harness.engine import TrainingStopped
from harness.errors import ConfigError
from harness.method import LabelledBatch, Method, MethodSetup, StepContext, UnlabelledBatch
from harness.models import build_model
from harness.plan import build_plan
from harness.registry import available_methods, get_method, method_settings
from harness.settings import setting_keys
from harness.worker import run_spec

# The plugin's package is installed before the registry is read, so the parametrisation below
# is the registry's own list: a new method (built-in or installed) is covered without an edit.
register_plugin_in_this_process()
# The README's example package (examples/pseudo_label/), imported from its folder: its method
# registers itself as it does when installed (tests/test_example_plugin.py installs it).
sys.path.append(str(Path(__file__).resolve().parents[1] / "examples" / "pseudo_label"))
importlib.import_module("fer_bench_pseudo_label.pseudo_label")
METHODS = sorted(available_methods())
NUM_CLASSES = 3


def _setup(total_steps: int = 10) -> MethodSetup:
    return MethodSetup(NUM_CLASSES, 16, torch.tensor([0, 1, 2, 0, 1, 2]), total_steps)


def _build(name: str, settings: dict[str, Any] | None = None) -> Method:
    return get_method(name).cls(settings or method_settings(name), _setup())


def _batches(step: int) -> tuple[LabelledBatch, UnlabelledBatch]:
    """Random 16×16 batches (6 labelled, 8 unlabelled) from a generator seeded by ``step``."""
    gen = torch.Generator().manual_seed(step)
    labelled = LabelledBatch(torch.randn(6, 3, 16, 16, generator=gen), torch.tensor([0, 1, 2] * 2))
    unlabelled = UnlabelledBatch(
        torch.randn(8, 3, 16, 16, generator=gen),
        torch.randn(8, 3, 16, 16, generator=gen),
        torch.arange(8) + 8 * (step % 2),
        torch.randint(0, NUM_CLASSES, (8,), generator=gen),
    )
    return labelled, unlabelled


def _models(method: Method) -> tuple[nn.Module, nn.Module]:
    """(student, teacher): the method's wrap of a seeded tiny fer_cnn, and its frozen copy."""
    torch.manual_seed(0)
    student = method.wrap_model(build_model("fer_cnn", NUM_CLASSES)[0])
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    return student, teacher


def _step(method: Method, student: nn.Module, teacher: nn.Module, step: int):
    """The engine's view of one step: the interval hook when due, then the loss."""
    labelled, unlabelled = _batches(step)

    def labelled_batches() -> Iterator[LabelledBatch]:
        yield labelled

    if method.interval_steps and step % method.interval_steps == 0:
        method.on_interval(teacher, labelled_batches, step)
    ctx = StepContext(
        student,
        teacher,
        labelled,
        unlabelled if method.uses_unlabelled else None,
        step,
        10,
        NUM_CLASSES,
    )
    return method.training_loss(ctx)


def _interpolated_keys(name: str) -> set[str]:
    """Keys of ``method:`` that the config file itself consumes elsewhere through
    ``${method.key}`` (e.g. dta_snl's balanced_sampling drives data.balanced_sampling)."""
    path = config_dir() / "method" / f"{name}.yaml"
    if not path.is_file():
        return set()
    text = path.read_text()
    return {key for key in yaml.safe_load(text)["method"] if f"${{method.{key}}}" in text}


def test_the_registry_lists_a_plugin_from_another_package() -> None:
    assert PLUGIN_METHOD in METHODS
    assert get_method(PLUGIN_METHOD).cls.__module__ == PLUGIN_MODULE
    assert set(group_options("method")) <= set(METHODS), "every built-in method is covered"


@pytest.mark.parametrize("name", METHODS)
def test_defaults_come_from_one_place_and_are_read_strictly(name: str) -> None:
    cls = get_method(name).cls
    has_file = name in group_options("method")
    assert not (has_file and cls.default_config), (
        f"{name} has defaults both in configs/method/{name}.yaml and in default_config"
    )
    settings = method_settings(name)
    _build(name, settings)  # the defaults are complete: nothing else is needed
    for key in sorted(set(settings) - {"name"} - _interpolated_keys(name)):
        partial = {k: v for k, v in settings.items() if k != key}
        with pytest.raises(ConfigError, match=rf"method\.{key} is missing"):
            _build(name, partial)  # so the code holds no second default for it


@pytest.mark.parametrize("name", METHODS)
def test_a_method_with_typed_settings_refuses_an_unknown_key(name: str) -> None:
    cls = get_method(name).cls
    if cls.Settings is None:  # a plugin reading its keys untyped (Method.setting)
        pytest.skip(f"{name} declares no Settings")
    assert set(method_settings(name)) - {"name"} <= set(setting_keys(cls.Settings))
    with pytest.raises(ConfigError, match="method: unknown setting not_a_setting"):
        _build(name, {**method_settings(name), "not_a_setting": 1})


@pytest.mark.parametrize("name", METHODS)
def test_one_step_gives_a_finite_loss_and_gradients_for_the_student_only(name: str) -> None:
    method = _build(name)
    student, teacher = _models(method)
    out = _step(method, student, teacher, step=0)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    for key, value in out.diagnostics.items():
        values = value.flatten().tolist() if isinstance(value, Tensor) else [value]
        assert all(isinstance(v, float) and not math.isinf(v) for v in values), key
    out.loss.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "the loss trains the student"
    assert all(p.grad is None for p in teacher.parameters()), "the teacher is never trained"


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Equal, tensors bit for bit (dtype and shape included), recursively; NaN equals NaN."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", METHODS)
def test_state_survives_a_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    method = _build(name)
    student, teacher = _models(method)
    for step in range(2):
        _step(method, student, teacher, step)
    torch.save(method.state_dict(), tmp_path / "method.pt")  # as the engine's checkpoint does
    restored = _build(name)
    restored.load_state_dict(torch.load(tmp_path / "method.pt", weights_only=False))
    _assert_same(restored.state_dict(), method.state_dict())
    outputs = []
    for m in (method, restored):
        torch.manual_seed(1)  # the same dropout draws for both
        outputs.append(_step(m, student, teacher, step=2))
    assert outputs[0].loss.item() == outputs[1].loss.item()
    _assert_same(outputs[0].diagnostics, outputs[1].diagnostics, "diagnostics")
    _assert_same(restored.summary(), method.summary(), "summary")


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_a_stopped_run_resumes_to_the_same_result(
    name: str, separable_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Stop after step 7 of 12 (a checkpoint of exactly that step), resume: the final result
    equals the uninterrupted run's, field by field."""
    overrides = [
        f"dataset.root={separable_folder}", "backbone=fer_cnn", "data.image_size=16",
        "data.batch_size=8", "data.unlabelled_ratio=2", "data.num_workers=0",
        "data.eval_batch_size=90", f"data.cache_dir={cache_dir}", "train.steps=12",
        "train.eval_every=6", "train.checkpoint_every=100", "train.log_every=3",
        "train.threads=1", "ema.decay=0.9",
    ]  # fmt: skip
    (spec,) = build_plan(name, "25%", "0", "folder", overrides)
    whole = run_spec(spec, tmp_path / "whole", show_progress=False)
    with pytest.raises(TrainingStopped):
        run_spec(spec, tmp_path / "split", show_progress=False, stop_requested=stop_after(7))
    resumed = run_spec(spec, tmp_path / "split", show_progress=False)
    assert resumed["timing"]["resumed_from_step"] == 7
    for field in ("metrics", "student_metrics", "evaluations", "diagnostics", "method_summary"):
        assert resumed[field] == whole[field], field
