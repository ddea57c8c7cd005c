"""The engine on a CUDA device: bf16 autocast, channels_last, ``train.compile=true`` and exact
resume. Marked ``gpu``: skipped without a CUDA device (see conftest), run on a GPU node by
``scripts/gpu_check.sh`` (``pytest -m gpu``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import stop_after

from harness.config import compose_config
from harness.engine import Training, TrainingStopped, next_batches, training_step
from harness.plan import build_plan
from harness.throughput import benchmark_data, build_case
from harness.worker import run_spec

# cuBLAS reads this when its first handle is made: set at import, before any CUDA work, so the
# deterministic resume test below can compare bits (scripts/gpu_check.sh exports it too).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = pytest.mark.gpu


def _cuda_training(tiny: list[str], method: str, *overrides: str) -> Training:
    """The engine set up on CUDA for a tiny synthfer run of ``method`` (auto precision)."""
    cfg = compose_config([*tiny, f"method={method}", "train.device=cuda", *overrides])
    return build_case(cfg, benchmark_data(cfg, pool=280), method=method)


def test_cuda_defaults_train_under_bf16_in_channels_last(tiny: list[str]) -> None:
    training = _cuda_training(tiny, "fixmatch")
    assert training.settings.amp and training.settings.channels_last, "auto is on for CUDA"
    conv_weights = [p for p in training.model.parameters() if p.ndim == 4]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)

    batches = next_batches(training)
    for images in (batches.labelled.images, batches.unlabelled.weak, batches.unlabelled.strong):
        assert images.is_cuda and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)

    dtypes: list[torch.dtype] = []
    first_conv = next(m for m in training.model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    before = [p.detach().clone() for p in training.model.parameters()]
    _, diagnostics = training_step(training, 0)

    assert torch.bfloat16 in dtypes, "the student's convolutions ran under bf16 autocast"
    assert all(p.dtype == torch.float32 for p in training.model.parameters()), "fp32 weights"
    assert torch.isfinite(torch.tensor(diagnostics["loss"]))
    changed = [
        not torch.equal(a, b) for a, b in zip(before, training.model.parameters(), strict=True)
    ]
    assert any(changed), "the step updated the weights"


def test_compiled_student_matches_eager_and_learns(tiny: list[str]) -> None:
    """``train.compile=true``: the compiled student computes the eager loss (bf16 tolerance)
    and training with it lowers the loss."""
    eager = _cuda_training(tiny, "supervised")
    compiled = _cuda_training(tiny, "supervised", "train.compile=true")
    assert compiled.student is not compiled.model
    losses = {"eager": [], "compiled": []}
    for step in range(30):
        for name, training in (("eager", eager), ("compiled", compiled)):
            losses[name].append(training_step(training, step)[1]["loss"])
    assert losses["compiled"][0] == pytest.approx(losses["eager"][0], rel=0.02)
    first, last = losses["compiled"][:5], losses["compiled"][-5:]
    assert sum(last) < sum(first), f"compiled training lowered the loss: {losses['compiled']}"


@pytest.fixture
def deterministic_cuda() -> Iterator[None]:
    """Deterministic CUDA kernels for the duration of a test: cuDNN may otherwise pick
    non-deterministic algorithms, which makes two uninterrupted runs differ as well."""
    cudnn = torch.backends.cudnn
    previous = (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark, cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.benchmark, cudnn.deterministic = False, True
    yield
    torch.use_deterministic_algorithms(previous[0])
    cudnn.benchmark, cudnn.deterministic = previous[1], previous[2]


@pytest.mark.usefixtures("deterministic_cuda")
def test_a_stopped_cuda_run_resumes_to_the_same_result(tiny: list[str], tmp_path: Path) -> None:
    """A FixMatch run on CUDA (bf16, channels_last) stopped after step 13 and resumed ends
    with exactly the uninterrupted run's metrics: CUDA's RNG state is part of the checkpoint."""
    (spec,) = build_plan("fixmatch", "25%", "0", "synthfer", [*tiny, "train.device=cuda"])
    uninterrupted = run_spec(spec, tmp_path / "a", show_progress=False)
    with pytest.raises(TrainingStopped):
        run_spec(spec, tmp_path / "b", show_progress=False, stop_requested=stop_after(13))
    resumed = run_spec(spec, tmp_path / "b", show_progress=False)

    assert resumed["provenance"]["device"] != "cpu"
    assert resumed["timing"]["resumed_from_step"] == 13
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["evaluations"] == uninterrupted["evaluations"]
    assert resumed["diagnostics"] == uninterrupted["diagnostics"]
