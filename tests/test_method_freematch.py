"""FreeMatch: SAT updates, update-before-mask order, the fairness term and exact resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from method_fakes import LogitsNet, full_config, method_config
from method_fakes import setup as shared_setup

from harness.errors import ConfigError
from harness.method import LabelledBatch, MethodSetup, StepContext, UnlabelledBatch
from harness.registry import get_method
from harness.ssl import threshold_mask
from methods.freematch import (
    FreeMatch,
    SATState,
    fairness_loss,
    sat_thresholds,
    sat_update,
)


def setup(num_classes: int = 2) -> MethodSetup:
    return shared_setup(num_classes, 10, labelled_targets=torch.arange(num_classes))


def ctx_for(
    weak_probs: list[list[float]], strong: list[list[float]], hidden: list[int]
) -> StepContext:
    """A step whose weak-view softmax is ``weak_probs`` (LogitsNet, one labelled row)."""
    c = len(weak_probs[0])
    labelled = LabelledBatch(torch.zeros(1, c), torch.tensor([0]))
    n = len(weak_probs)
    unlabelled = UnlabelledBatch(
        torch.tensor(weak_probs).log(), torch.tensor(strong), torch.arange(n), torch.tensor(hidden)
    )
    return StepContext(LogitsNet(c), LogitsNet(c), labelled, unlabelled, 0, 10, c)


def test_initial_state_is_uniform() -> None:
    state = SATState.initial(4)
    assert state.tau.item() == pytest.approx(0.25)
    assert state.p_model.tolist() == [0.25] * 4 and state.label_hist.tolist() == [0.25] * 4


def test_sat_update_sequence_by_hand() -> None:
    probs = torch.tensor([[0.75, 0.25], [0.375, 0.625]])  # max 0.75, 0.625 -> mean 0.6875
    s1 = sat_update(SATState.initial(2), probs, 0.5, use_quantile=False, clip_thresh=False)
    assert s1.tau.item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.6875)  # 0.59375
    torch.testing.assert_close(s1.p_model, torch.tensor([0.53125, 0.46875]))
    torch.testing.assert_close(s1.label_hist, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(
        sat_thresholds(s1), torch.tensor([0.59375, 0.59375 * 0.46875 / 0.53125])
    )
    probs2 = torch.tensor([[0.875, 0.125], [0.625, 0.375]])  # both class 0, mean max 0.75
    s2 = sat_update(s1, probs2, 0.5, use_quantile=False, clip_thresh=False)
    assert s2.tau.item() == pytest.approx(0.5 * 0.59375 + 0.5 * 0.75)
    torch.testing.assert_close(s2.p_model, torch.tensor([0.640625, 0.359375]))
    torch.testing.assert_close(s2.label_hist, torch.tensor([0.75, 0.25]))
    assert s1.tau.item() == pytest.approx(0.59375)  # the update is pure


def test_sat_update_quantile_and_clip() -> None:
    probs = torch.tensor([[0.75, 0.25], [0.375, 0.625]])
    q = sat_update(SATState.initial(2), probs, 0.5, use_quantile=True, clip_thresh=False)
    assert q.tau.item() == pytest.approx(0.25 + 0.5 * (0.625 + 0.8 * 0.125))  # 0.8 quantile
    sure = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert sat_update(SATState.initial(2), sure, 0.0, False, False).tau.item() == 1.0
    assert sat_update(SATState.initial(2), sure, 0.0, False, True).tau.item() == pytest.approx(0.95)


def test_mask_is_inclusive_at_the_class_threshold() -> None:
    state = SATState(torch.tensor(0.75), torch.tensor([0.5, 0.25, 0.25]), torch.ones(3) / 3)
    torch.testing.assert_close(sat_thresholds(state), torch.tensor([0.75, 0.375, 0.375]))
    probs = torch.tensor(
        [[0.75, 0.125, 0.125], [0.625, 0.25, 0.125], [0.3125, 0.375, 0.3125], [0.25, 0.0, 0.75]]
    )
    mask, pseudo = threshold_mask(probs, sat_thresholds(state))
    assert pseudo.tolist() == [0, 0, 1, 2]
    assert mask.tolist() == [True, False, True, True]


def test_update_comes_before_the_mask() -> None:
    method = FreeMatch(full_config("freematch", ema_p=0.5, lambda_e=0.0), setup())
    out = method.training_loss(ctx_for([[0.9, 0.1], [0.55, 0.45]], [[0.0, 1.0]] * 2, [0, 1]))
    # tau = 0.25 + 0.5 * 0.725; p~ = 0.25 + 0.5 * (0.725, 0.275) -> thresholds 0.6125, 0.3875
    torch.testing.assert_close(out.diagnostics["threshold"], torch.tensor([0.6125, 0.3875]))
    # 0.55 would pass the initial 0.5 threshold but not the updated 0.6125
    assert out.diagnostics["mask_rate"] == pytest.approx(0.5)
    assert out.diagnostics["pseudo_label_acc"] == 1.0
    assert method.summary()["tau"] == pytest.approx(0.6125)


def plain_fairness(
    mask: list[float], logits_s: list[list[float]], p_model: list[float], label_hist: list[float]
) -> float:
    """FreeMatch's fairness term written out independently with numpy."""
    z = np.asarray(logits_s, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    hist = np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / len(p)
    target = np.asarray(p_model) / np.asarray(label_hist)
    target /= target.sum()
    scale = np.array([1 / h if h > 0 else 0.0 for h in hist])
    mean = p.mean(axis=0) * scale
    mean /= mean.sum()
    return float((target * np.log(mean + 1e-12)).sum())


def test_fairness_loss_by_hand_and_by_formula() -> None:
    uniform = SATState(torch.tensor(0.5), torch.ones(3) / 3, torch.ones(3) / 3)
    logits = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]).log()
    # hist_s = (1/2, 1/2, 0); mean p = (3/8, 3/8, 1/4) -> scaled and normalised (1/2, 1/2, 0)
    by_hand = (2 * math.log(0.5) + math.log(1e-12)) / 3
    got = fairness_loss(torch.tensor([True, True]), logits, uniform).item()
    assert got == pytest.approx(by_hand, rel=1e-5)

    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    state = SATState(
        torch.tensor(0.7), torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    )
    loss = fairness_loss(mask, logits, state)
    expected = plain_fairness(
        mask.tolist(), logits.tolist(), [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and torch.any(logits.grad[0] != 0)


def test_total_loss_weights_and_no_mask_case() -> None:
    method = FreeMatch(full_config("freematch", ema_p=0.5, lambda_u=2.0, lambda_e=0.5), setup(3))
    weak = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
    strong = [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    out = method.training_loss(ctx_for(weak, strong, [0, 1, 2]))
    d = out.diagnostics
    assert d["loss_extra"] != 0.0
    expected = d["loss_sup"] + 2.0 * d["loss_unsup"] + 0.5 * d["loss_extra"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert d["loss_sup"] == pytest.approx(math.log(3.0), rel=1e-6)
    # a state whose thresholds nobody reaches: no mask, no fairness term, NaN accuracy
    method.sat = SATState(torch.tensor(1.0), torch.ones(3) / 3, torch.ones(3) / 3)
    method.settings = dataclasses.replace(method.settings, ema_p=0.99)
    out = method.training_loss(ctx_for(weak, strong, [0, 1, 2]))
    assert out.diagnostics["mask_rate"] == 0.0 and out.diagnostics["loss_extra"] == 0.0
    assert math.isnan(out.diagnostics["pseudo_label_acc"])
    assert out.loss.item() == pytest.approx(math.log(3.0), rel=1e-6)


STEPS = [
    ([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], [[1.0, 0.0, 0.0]] * 3, [0, 1, 2]),
    ([[0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]], [[0.0, 2.0, 0.0]] * 3, [0, 2, 1]),
    ([[0.4, 0.5, 0.1], [0.95, 0.03, 0.02], [0.2, 0.2, 0.6]], [[0.5, 0.0, 1.0]] * 3, [1, 0, 2]),
]


def test_state_survives_a_checkpoint_exactly(tmp_path: Path) -> None:
    config = full_config("freematch", ema_p=0.9, use_quantile=True)
    method = FreeMatch(config, setup(3))
    for step in STEPS[:2]:
        method.training_loss(ctx_for(*step))
    torch.save(method.state_dict(), tmp_path / "state.pt")
    restored = FreeMatch(config, setup(3))
    restored.load_state_dict(torch.load(tmp_path / "state.pt"))
    a, b = method.training_loss(ctx_for(*STEPS[2])), restored.training_loss(ctx_for(*STEPS[2]))
    assert a.loss.item() == b.loss.item()
    assert torch.equal(a.diagnostics["threshold"], b.diagnostics["threshold"])
    for key, value in method.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    # a fresh method differs: the restored state really carried the history
    fresh = FreeMatch(config, setup(3)).training_loss(ctx_for(*STEPS[2]))
    assert not torch.equal(fresh.diagnostics["threshold"], a.diagnostics["threshold"])
    with pytest.raises(ValueError, match="shape"):
        FreeMatch(config, setup(4)).load_state_dict(method.state_dict())


def test_config_file_defaults_and_registry() -> None:
    text, block = method_config("freematch")
    assert text.startswith("# @package _global_")
    assert block["name"] == "freematch"
    method = get_method("freematch").cls(block, setup())
    assert isinstance(method, FreeMatch)
    s = method.settings
    values = (s.ema_p, s.lambda_u, s.lambda_e, s.use_quantile)
    assert values == (0.999, 1.0, 0.001, False) and s.clip_thresh is False
    with pytest.raises(ConfigError, match="ema_p"):
        FreeMatch(full_config("freematch", ema_p=1.0), setup())
