"""Supervised baseline: mean cross-entropy on the labelled batch, nothing unlabelled."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from harness.method import LabelledBatch, MethodSetup, StepContext
from harness.registry import get_method
from methods.supervised import Supervised

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "method" / "supervised.yaml"


class LogitsNet(nn.Module):
    """Stand-in FERNet whose inputs are the logits (times a learnable scale of 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def test_loss_is_labelled_cross_entropy_and_backpropagates() -> None:
    model = LogitsNet()
    block = yaml.safe_load(CONFIG.read_text())["method"]
    method = get_method("supervised").cls(block, MethodSetup(2, 0, torch.tensor([0, 1]), 10))
    assert isinstance(method, Supervised) and not method.uses_unlabelled
    x = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    ctx = StepContext(model, model, LabelledBatch(x, torch.tensor([0, 1])), None, 0, 10, 2)
    out = method.training_loss(ctx)
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.diagnostics == {"loss_sup": pytest.approx(expected, rel=1e-6)}
    out.loss.backward()
    assert model.scale.grad is not None and model.scale.grad.item() != 0.0
