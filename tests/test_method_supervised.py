"""Supervised baseline: mean cross-entropy on the labelled batch, nothing unlabelled."""

from __future__ import annotations

import math

import pytest
import torch
from method_fakes import LogitsNet, method_config

from harness.method import LabelledBatch, MethodSetup, StepContext
from harness.registry import get_method
from methods.supervised import Supervised


def test_loss_is_labelled_cross_entropy_and_backpropagates() -> None:
    model = LogitsNet()
    _, block = method_config("supervised")
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
