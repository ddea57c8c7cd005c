"""harness.ssl: the building blocks every SSL method shares."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.errors import ConfigError
from harness.method import LabelledBatch, StepContext
from harness.ssl import (
    ema_update_,
    forward_logits,
    load_tensor_state,
    mapping,
    masked_cross_entropy,
    pseudo_label_stats,
    require_unlabelled,
    supervised_loss,
    tensor_state,
    threshold_mask,
)


class CountingBN(nn.Module):
    """Batch norm (train mode) then a linear head, counting its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.bn(x))


def test_forward_logits_is_one_concatenated_pass() -> None:
    torch.manual_seed(0)
    model = CountingBN()
    a, b, c = torch.randn(2, 4), torch.randn(3, 4) + 5.0, torch.randn(3, 4) - 5.0
    out = forward_logits(model, a, b, c)
    assert model.calls == 1
    assert [len(t) for t in out] == [2, 3, 3]
    # Shared BN statistics: identical to slicing one pass on the concatenation, and different
    # from running the labelled batch alone (its own statistics).
    whole = model(torch.cat([a, b, c]))
    torch.testing.assert_close(out[0], whole[:2])
    torch.testing.assert_close(out[2], whole[5:])
    assert not torch.allclose(out[0], model(a))


def test_forward_logits_single_batch() -> None:
    model = CountingBN()
    (out,) = forward_logits(model, torch.randn(5, 4))
    assert out.shape == (5, 3) and model.calls == 1


def test_supervised_loss_is_mean_cross_entropy() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1])
    # row 0: p(0) = 3/4; row 1: p(1) = 1/2
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert supervised_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_masked_cross_entropy_divides_by_batch_size_not_mask_count() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0], [5.0, 0.0]])
    targets = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([True, True, False, False])
    expected = (math.log(2.0) - math.log(0.75)) / 4  # two kept, normalised by 4
    assert masked_cross_entropy(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    weights = torch.tensor([0.5, 0.0, 0.0, 0.0])  # float weights are accepted too
    got = masked_cross_entropy(logits, targets, weights).item()
    assert got == pytest.approx(0.5 * math.log(2.0) / 4, rel=1e-6)
    assert masked_cross_entropy(logits, targets, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_masked_cross_entropy_backpropagates_only_through_kept_samples() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    masked_cross_entropy(logits, torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 1.0])).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[1] == 0) and torch.any(logits.grad[0] != 0)


def test_pseudo_label_stats() -> None:
    mask = torch.tensor([True, True, True, False])
    pseudo = torch.tensor([0, 1, 2, 3])
    hidden = torch.tensor([0, 2, 2, 3])  # the unmasked 4th sample is right but does not count
    stats = pseudo_label_stats(mask, pseudo, hidden)
    assert stats["mask_rate"] == pytest.approx(0.75)
    assert stats["pseudo_label_acc"] == pytest.approx(2 / 3)
    empty = pseudo_label_stats(torch.zeros(4, dtype=torch.bool), pseudo, hidden)
    assert empty["mask_rate"] == 0.0 and math.isnan(empty["pseudo_label_acc"])
    floats = pseudo_label_stats(torch.tensor([1.0, 0.0, 0.0, 0.0]), pseudo, hidden)
    assert floats == {"mask_rate": 0.25, "pseudo_label_acc": 1.0}


def test_ema_update_in_place() -> None:
    buffer = torch.tensor([1.0, 2.0])
    same = buffer
    ema_update_(buffer, torch.tensor([3.0, 4.0]), 0.9)
    assert same is buffer
    torch.testing.assert_close(buffer, torch.tensor([1.2, 2.2]))
    scalar = torch.tensor(0.5)
    ema_update_(scalar, torch.tensor(1.0), 0.75)
    assert scalar.item() == pytest.approx(0.625)


def test_threshold_mask_one_threshold_for_all_is_inclusive() -> None:
    probs = torch.tensor(
        [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.375, 0.3125, 0.3125], [0.0, 0.0, 1.0]]
    )
    mask, pseudo = threshold_mask(probs, 0.5)
    assert mask.tolist() == [True, True, False, True]  # 0.5 >= 0.5 is kept (not >)
    assert pseudo.tolist() == [0, 1, 0, 2]
    at_095 = torch.tensor([[0.95, 0.05], [0.9499, 0.0501], [0.96, 0.04]])
    assert threshold_mask(at_095, 0.95)[0].tolist() == [True, False, True]
    assert threshold_mask(at_095, torch.tensor(0.95))[0].tolist() == [True, False, True]


def test_threshold_mask_uses_the_threshold_of_the_predicted_class() -> None:
    thresholds = torch.tensor([0.5, 0.75, 0.0])
    probs = torch.tensor(
        [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.25, 0.75, 0.0]]
    )
    mask, pseudo = threshold_mask(probs, thresholds)
    assert pseudo.tolist() == [0, 1, 2, 1]
    assert mask.tolist() == [True, False, True, True]  # 0.5 >= 0.5 and 0.75 >= 0.75 kept


def test_mappings_and_an_unknown_one() -> None:
    beta = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(mapping("convex")(beta), torch.tensor([0.0, 1 / 3, 1.0]))
    torch.testing.assert_close(mapping("linear")(beta), beta)
    with pytest.raises(ConfigError, match=r"method\.mapping must be one of convex, linear"):
        mapping("concave")


def test_require_unlabelled_names_the_method() -> None:
    labelled = LabelledBatch(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    ctx = StepContext(nn.Identity(), nn.Identity(), labelled, None, 0, 1, 3)
    with pytest.raises(RuntimeError, match="fixmatch needs an unlabelled batch"):
        require_unlabelled(ctx, "fixmatch")


def test_tensor_state_round_trip_copies_and_checks_shapes() -> None:
    live = {"threshold": torch.tensor([0.5, 0.75]), "count": torch.tensor(3)}
    saved = tensor_state(**live)
    live["threshold"].fill_(0.0)  # the saved state is a copy
    assert saved["threshold"].tolist() == [0.5, 0.75]
    restored = load_tensor_state(saved, live, "demo")
    assert restored["threshold"].tolist() == [0.5, 0.75] and int(restored["count"]) == 3
    saved["threshold"].fill_(1.0)  # so is the restored one
    assert restored["threshold"].tolist() == [0.5, 0.75]
    with pytest.raises(ValueError, match=r"demo state 'threshold' has shape \(3,\)"):
        load_tensor_state({**saved, "threshold": torch.zeros(3)}, live, "demo")
