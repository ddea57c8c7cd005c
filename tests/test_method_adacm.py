"""Ada-CM: per-epoch thresholds from labelled predictions, mask, NT-Xent value, known-step
loss, epoch length, config and exact resume."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from method_fakes import LogitsNet, ce, full_config, method_config, tiny_batches
from method_fakes import setup as shared_setup
from torch import nn

from harness.errors import ConfigError
from harness.method import LabelledBatch, StepContext, UnlabelledBatch
from harness.models import build_model
from harness.registry import get_method
from methods.adacm import AdaCM, adacm_thresholds, nt_xent

setup = partial(shared_setup, total_steps=100)


# Labelled-set predictions: class 0 has two correct (0.95, 0.99) and one sample wrongly
# predicted as class 1 (0.85, excluded from both classes); class 1 one correct (0.7) and one
# wrong; class 2 none correct.
LABELLED_PROBS = [
    [0.95, 0.03, 0.02],
    [0.99, 0.005, 0.005],
    [0.10, 0.85, 0.05],
    [0.60, 0.30, 0.10],
    [0.20, 0.70, 0.10],
    [0.50, 0.10, 0.40],
]
LABELLED_TARGETS = [0, 0, 0, 1, 1, 2]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_thresholds_from_labelled_predictions() -> None:
    probs, targets = torch.tensor(LABELLED_PROBS), torch.tensor(LABELLED_TARGETS)
    tau = adacm_thresholds(probs, targets, epoch=20)
    # class 0: 0.97 · sigmoid(20) · mean(0.95, 0.99); class 1: 0.97 · 0.7 < 0.8 → floor;
    # class 2: no correctly classified sample → floor
    assert tau.tolist() == pytest.approx([0.97 * sigmoid(20) * 0.97, 0.8, 0.8], abs=1e-6)
    # early epochs: sigmoid(2) ≈ 0.88 still lifts class 0 above the floor, sigmoid(1) does not
    assert float(adacm_thresholds(probs, targets, 2)[0]) == pytest.approx(
        0.97 * sigmoid(2) * 0.97, abs=1e-6
    )
    assert adacm_thresholds(probs, targets, 1).tolist() == pytest.approx([0.8] * 3)
    # floor and scale are parameters
    low = adacm_thresholds(probs, targets, 20, floor=0.5, scale=1.0)
    assert low.tolist() == pytest.approx([sigmoid(20) * 0.97, sigmoid(20) * 0.7, 0.5], abs=1e-6)


def reference_nt_xent(z1: list[list[float]], z2: list[list[float]], t: float) -> float:
    """SimCLR loss in plain Python: 2N anchors, positive = the other view of the same sample."""
    z = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in z1 + z2]
    n = len(z1)

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j], strict=True)) / t

    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denom = sum(math.exp(sim(i, a)) for a in range(2 * n) if a != i)
        total += -math.log(math.exp(sim(i, positive)) / denom)
    return total / (2 * n)


def test_contrastive_loss_matches_the_plain_formula() -> None:
    z1 = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    z2 = [[0.8, 0.3], [-0.2, 1.0], [2.0, 1.5]]
    for t in (0.5, 0.07):
        got = nt_xent(torch.tensor(z1), torch.tensor(z2), t).item()
        assert got == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)
    # one pair: its only other embedding is its positive → 0; no pairs → 0
    assert nt_xent(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.1).item() == 0.0
    assert nt_xent(torch.zeros(0, 2), torch.zeros(0, 2), 0.1).item() == 0.0


def labelled_batches() -> Iterator[LabelledBatch]:
    """The labelled set in two batches, as log-probabilities for LogitsNet."""
    images, targets = torch.tensor(LABELLED_PROBS).log(), torch.tensor(LABELLED_TARGETS)
    yield LabelledBatch(images[:4], targets[:4])
    yield LabelledBatch(images[4:], targets[4:])


WEAK = [[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]
STRONG = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, -0.5, 1.0], [0.2, 0.1, 0.3]]
HIDDEN = [0, 1, 2, 1]


def ctx_for(weak: list[list[float]] = WEAK, model: nn.Module | None = None) -> StepContext:
    unlabelled = UnlabelledBatch(
        torch.tensor(weak).log(), torch.tensor(STRONG), torch.arange(4), torch.tensor(HIDDEN)
    )
    labelled = LabelledBatch(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([1]))
    model = model or LogitsNet()
    return StepContext(model, LogitsNet().eval(), labelled, unlabelled, 0, 100, 3)


def test_on_interval_epochs_and_thresholds() -> None:
    method = AdaCM(full_config("adacm", epoch_steps=10, tau_scale=1.0, tau_floor=0.6), setup())
    assert method.interval_steps == 10
    teacher = LogitsNet().eval()

    def no_batches() -> Iterator[LabelledBatch]:
        raise AssertionError("step 0 must not evaluate the labelled set")

    method.on_interval(teacher, no_batches, 0)  # no epoch done yet: the floor, as the original
    assert method.threshold.tolist() == pytest.approx([0.6] * 3)
    method.on_interval(teacher, labelled_batches, 20)  # two epochs done: sigmoid(2)
    expected = adacm_thresholds(
        torch.tensor(LABELLED_PROBS), torch.tensor(LABELLED_TARGETS), 2, 0.6, 1.0
    )
    torch.testing.assert_close(method.threshold, expected)
    assert float(method.threshold[0]) == pytest.approx(sigmoid(2) * 0.97, abs=1e-6)
    assert float(method.threshold[1]) == pytest.approx(sigmoid(2) * 0.7, abs=1e-6)
    # null epoch_steps: the run is cut into `epochs` epochs
    assert AdaCM(full_config("adacm", epochs=20), setup(total_steps=16000)).interval_steps == 800
    assert (
        AdaCM(
            full_config("adacm", epochs=20, epoch_steps=None), setup(total_steps=5)
        ).interval_steps
        == 1
    )


def test_known_step_loss() -> None:
    method = AdaCM(full_config("adacm"), setup())
    method.threshold = torch.tensor([0.85, 0.55, 0.8])
    out = method.training_loss(ctx_for())
    # kept: sample 0 (0.9 ≥ 0.85) and 3 (0.6 ≥ 0.55); sample 1 (0.5 < 0.85), 2 (0.7 < 0.8) not
    assert out.diagnostics["mask_rate"] == 0.5
    assert out.diagnostics["pseudo_label_acc"] == 1.0

    lx = math.log(math.exp(2.0) + 2.0)
    lu = (ce(STRONG[0], 0) + ce(STRONG[3], 1)) / 4
    weak_logits = [[math.log(v) for v in row] for row in WEAK]
    ls = reference_nt_xent([weak_logits[1], weak_logits[2]], [STRONG[1], STRONG[2]], 0.07)
    assert out.diagnostics["loss_sup"] == pytest.approx(lx, rel=1e-5)
    assert out.diagnostics["loss_unsup"] == pytest.approx(lu, rel=1e-5)
    assert out.diagnostics["loss_extra"] == pytest.approx(ls, rel=1e-4)
    assert out.loss.item() == pytest.approx(0.5 * lx + lu + 0.1 * ls, rel=1e-4)
    assert out.diagnostics["threshold"].tolist() == pytest.approx([0.85, 0.55, 0.8])


def test_state_survives_a_checkpoint_exactly(tmp_path: Path) -> None:
    method = AdaCM(full_config("adacm", epoch_steps=5, tau_floor=0.5), setup())
    method.on_interval(LogitsNet().eval(), labelled_batches, 15)
    torch.save(method.state_dict(), tmp_path / "state.pt")
    restored = AdaCM(full_config("adacm", epoch_steps=5, tau_floor=0.5), setup())
    restored.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert torch.equal(restored.threshold, method.threshold)
    assert restored.threshold.tolist() != [0.5] * 3  # the state is not the initial one
    a, b = method.training_loss(ctx_for()), restored.training_loss(ctx_for())
    assert a.loss.item() == b.loss.item()
    assert a.diagnostics["mask_rate"] == b.diagnostics["mask_rate"]
    state = method.state_dict()
    state["threshold"].fill_(0.0)  # a copy
    assert method.threshold.min() > 0
    assert restored.summary() == {"threshold": method.threshold.tolist(), "epoch_steps": 5}
    with pytest.raises(ValueError, match="shape"):
        AdaCM(full_config("adacm"), setup(num_classes=4)).load_state_dict(method.state_dict())


def test_config_file_defaults_and_registry() -> None:
    text, block = method_config("adacm")
    assert text.startswith("# @package _global_")
    assert block["name"] == "adacm"
    method = get_method("adacm").cls(block, setup(total_steps=40000))
    assert isinstance(method, AdaCM)
    assert (method.settings.lambda_x, method.settings.lambda_u, method.settings.lambda_s) == (
        0.5,
        1.0,
        0.1,
    )
    assert (method.settings.temperature, method.settings.tau_floor, method.settings.tau_scale) == (
        0.07,
        0.8,
        0.97,
    )
    assert method.interval_steps == 2000
    assert method.threshold.tolist() == pytest.approx([0.8] * 3)
    with pytest.raises(ConfigError, match="temperature"):
        AdaCM(full_config("adacm", temperature=0.0), setup())
    with pytest.raises(ConfigError, match="epoch_steps"):
        AdaCM(full_config("adacm", epoch_steps=0), setup())


class OriginalHead(nn.Module):
    """The head of the authors' ``ResNet_18`` (models/backbone.py), verbatim in structure:
    ``output = Sequential(Dropout(0.5), Flatten())``; ``feature = F.normalize(output(avg))``;
    ``out = classifier(feature)``; returns ``(out, feature)``."""

    def __init__(self, base: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.output = nn.Sequential(nn.Dropout(0.5), nn.Flatten())
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.base(image)
        feature_map = F.avg_pool2d(feature_map, feature_map.size()[2:])
        feature = F.normalize(self.output(feature_map), dim=1)
        return self.classifier(feature), feature


@pytest.mark.parametrize("training", [False, True])
def test_wrapped_model_is_the_originals_normalised_embedding_head(training: bool) -> None:
    torch.manual_seed(0)
    model, _ = build_model("fer_cnn", 3)
    wrapped = AdaCM(full_config("adacm"), setup()).wrap_model(model)
    original = OriginalHead(lambda x: model.forward_features(x), model.classifier)
    wrapped.train(training)
    original.train(training)
    images = torch.randn(4, 3, 16, 16)
    torch.manual_seed(1)
    logits, embedding = wrapped.forward_with_embedding(images)
    torch.manual_seed(1)  # the same dropout mask
    want_logits, want_embedding = original(images)
    torch.testing.assert_close(embedding, want_embedding)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(wrapped(images) if not training else logits, logits)
    if training:  # dropout acts before the normalisation: some coordinates are exactly zero
        assert (embedding == 0).any()


def test_the_wrapped_model_trains_and_its_ema_copy_evaluates_without_dropout() -> None:
    torch.manual_seed(0)
    method = AdaCM(full_config("adacm"), setup())
    model = method.wrap_model(build_model("fer_cnn", 3)[0])
    teacher = copy.deepcopy(model).eval()
    labelled, unlabelled = tiny_batches()
    out = method.training_loss(StepContext(model, teacher, labelled, unlabelled, 0, 10, 3))
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert out.diagnostics["loss_extra"] > 0  # the contrastive term reaches the embedding
    images = torch.randn(2, 3, 8, 8)
    assert torch.equal(teacher(images), teacher(images)), "no dropout at evaluation"
    with pytest.raises(ConfigError, match="dropout"):
        AdaCM(full_config("adacm", dropout=1.0), setup())
