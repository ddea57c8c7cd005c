"""FixMatch: the >= p_cutoff rule, the loss on a hand-made batch, config and a smoke step."""

from __future__ import annotations

import pytest
import torch
from method_fakes import LogitsNet, ce, full_config, method_config, setup
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import LabelledBatch, StepContext, UnlabelledBatch
from harness.registry import get_method
from methods.fixmatch import FixMatch


def ctx_for(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    weak: Tensor,
    strong: Tensor,
    idx: Tensor,
    hidden: Tensor,
    num_classes: int = 3,
) -> StepContext:
    """A step context with both batches (the model is student and teacher)."""
    labelled, unlabelled = LabelledBatch(x, y), UnlabelledBatch(weak, strong, idx, hidden)
    return StepContext(model, model, labelled, unlabelled, 0, 10, num_classes)


def test_loss_on_hand_made_batch() -> None:
    method = FixMatch(full_config("fixmatch", p_cutoff=0.9, lambda_u=2.0), setup())
    x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    weak_probs = torch.tensor([[0.96, 0.02, 0.02], [0.5, 0.3, 0.2], [0.01, 0.01, 0.98]])
    strong = torch.tensor([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 2.0]])
    hidden = torch.tensor([0, 0, 1])
    out = method.training_loss(
        ctx_for(LogitsNet(3), x, y, weak_probs.log(), strong, torch.tensor([0, 1, 2]), hidden)
    )
    sup = (ce(x[0], 0) + ce(x[1], 2)) / 2
    unsup = (ce(strong[0], 0) + ce(strong[2], 2)) / 3  # sample 1 masked out; divide by 3
    assert out.loss.item() == pytest.approx(sup + 2.0 * unsup, rel=1e-5)
    d = out.diagnostics
    assert d["loss_sup"] == pytest.approx(sup, rel=1e-5)
    assert d["loss_unsup"] == pytest.approx(unsup, rel=1e-5)
    assert d["mask_rate"] == pytest.approx(2 / 3)
    assert d["pseudo_label_acc"] == pytest.approx(0.5)  # pseudo 0 right, pseudo 2 wrong
    assert d["threshold"].tolist() == pytest.approx([0.9, 0.9, 0.9])


def test_weak_view_gets_no_gradient() -> None:
    model = LogitsNet(3)
    method = FixMatch(full_config("fixmatch"), setup())
    weak = torch.tensor([[5.0, 0.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    out = method.training_loss(
        ctx_for(
            model,
            torch.zeros(1, 3),
            torch.tensor([1]),
            weak,
            strong,
            torch.tensor([0]),
            torch.tensor([0]),
        )
    )
    out.loss.backward()
    assert weak.grad is None or torch.all(weak.grad == 0)  # pseudo-labels are detached
    assert strong.grad is not None and torch.any(strong.grad != 0)


def test_config_file_defaults_and_registry() -> None:
    text, block = method_config("fixmatch")
    assert text.startswith("# @package _global_")
    assert block == {"name": "fixmatch", "p_cutoff": 0.95, "lambda_u": 1.0}
    method = get_method("fixmatch").cls(block, setup())
    assert isinstance(method, FixMatch) and method.uses_unlabelled
    assert (method.settings.p_cutoff, method.settings.lambda_u) == (0.95, 1.0)
    with pytest.raises(ConfigError, match="p_cutoff"):
        FixMatch(full_config("fixmatch", p_cutoff=1.5), setup())
