"""FlexMatch: learning effects, warm-up, per-class thresholds, memory order and exact resume."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from method_fakes import LogitsNet, full_config, method_config
from method_fakes import setup as shared_setup

from harness.errors import ConfigError
from harness.method import LabelledBatch, StepContext, UnlabelledBatch
from harness.registry import get_method
from methods.flexmatch import (
    FlexMatch,
    flexmatch_thresholds,
    learning_effect,
    remember_,
)

setup = partial(shared_setup, num_unlabelled=6)


def ctx_for(weak_probs: list[list[float]], idx: list[int], hidden: list[int]) -> StepContext:
    """A step whose weak-view softmax is ``weak_probs`` (LogitsNet, fixed labelled batch)."""
    weak = torch.tensor(weak_probs).log()
    strong = torch.tensor([[1.0, 0.0, -1.0]] * len(idx))
    labelled = LabelledBatch(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([1]))
    unlabelled = UnlabelledBatch(weak, strong, torch.tensor(idx), torch.tensor(hidden))
    return StepContext(LogitsNet(3), LogitsNet(3), labelled, unlabelled, 0, 10, 3)


# Step 1 remembers idx 0 -> class 0 and idx 1 -> class 1 (idx 4 is below p_cutoff = 0.5).
STEP1 = ([[0.75, 0.125, 0.125], [0.25, 0.625, 0.125], [0.4, 0.35, 0.25]], [0, 1, 4], [0, 1, 1])
# Step 2 remembers idx 2, 3 -> class 0; idx 5 (0.45 for class 0) is not remembered, and it
# passes the mask only because the mask uses the thresholds from before this batch.
STEP2 = ([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.45, 0.3, 0.25]], [2, 3, 5], [0, 2, 0])
STEP3 = ([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], [4, 5, 0], [1, 0, 2])


def test_learning_effect_with_and_without_warmup() -> None:
    selected = torch.tensor([0, 0, 0, 1, -1, -1, -1, -1, -1, -1])  # sigma = 3, 1, 0; unused 6
    prev = torch.zeros(3)
    warm = learning_effect(selected, 3, True, prev)
    torch.testing.assert_close(warm, torch.tensor([3 / 6, 1 / 6, 0.0]))
    cold = learning_effect(selected, 3, False, prev)
    torch.testing.assert_close(cold, torch.tensor([1.0, 1 / 3, 0.0]))
    # once the unused count is no longer the largest, warm-up and no warm-up agree
    mostly_used = torch.tensor([0, 0, 0, 1, 2, -1])
    torch.testing.assert_close(
        learning_effect(mostly_used, 3, True, prev), learning_effect(mostly_used, 3, False, prev)
    )


def test_learning_effect_skips_when_one_bin_holds_everything() -> None:
    prev = torch.tensor([0.1, 0.2, 0.3])
    for selected in (torch.full((5,), -1), torch.full((5,), 2)):
        out = learning_effect(selected, 3, True, prev)
        torch.testing.assert_close(out, prev)
        assert out is not prev


def test_thresholds_convex_and_linear() -> None:
    beta = torch.tensor([0.5, 1 / 6, 0.0, 1.0])
    convex = flexmatch_thresholds(beta, 0.95, "convex")
    torch.testing.assert_close(convex, torch.tensor([0.95 / 3, 0.95 / 11, 0.0, 0.95]))
    linear = flexmatch_thresholds(beta, 0.95, "linear")
    torch.testing.assert_close(linear, torch.tensor([0.475, 0.95 / 6, 0.0, 0.95]))


def test_remember_writes_confident_samples_at_their_index() -> None:
    selected = torch.full((8,), -1)
    probs = torch.tensor([[0.5, 0.5 - 1e-3, 1e-3], [0.49, 0.26, 0.25], [0.0, 0.25, 0.75]])
    remember_(selected, torch.tensor([7, 2, 5]), probs, 0.5)
    assert selected.tolist() == [-1, -1, -1, -1, -1, 2, -1, 0]  # 0.5 >= 0.5 is remembered


def test_known_sequence_of_steps() -> None:
    method = FlexMatch(full_config("flexmatch", p_cutoff=0.5, lambda_u=1.0), setup())
    out1 = method.training_loss(ctx_for(*STEP1))
    # thresholds start at 0: every unlabelled sample is used at the very first step
    assert out1.diagnostics["threshold"].tolist() == [0.0, 0.0, 0.0]
    assert out1.diagnostics["mask_rate"] == 1.0
    assert method.selected_label.tolist() == [0, 1, -1, -1, -1, -1]
    # sigma = 1, 1, 0 with 4 unused: beta = 1/4, 1/4, 0; threshold 0.5 * (1/4)/(7/4) = 1/14
    torch.testing.assert_close(method.thresholds(), torch.tensor([1 / 14, 1 / 14, 0.0]))

    out2 = method.training_loss(ctx_for(*STEP2))
    torch.testing.assert_close(out2.diagnostics["threshold"], torch.tensor([1 / 14, 1 / 14, 0.0]))
    assert out2.diagnostics["mask_rate"] == 1.0  # idx 5 (0.45) passes the pre-update 1/14
    assert out2.diagnostics["pseudo_label_acc"] == pytest.approx(2 / 3)
    assert method.selected_label.tolist() == [0, 1, 0, 0, -1, -1]
    # sigma = 3, 1, 0 with 2 unused: beta = 1, 1/3, 0 -> 0.5, 0.5 * (1/3)/(5/3) = 0.1, 0
    torch.testing.assert_close(method.thresholds(), torch.tensor([0.5, 0.1, 0.0]))
    # loss: CE of the labelled row + mean over the batch of CE(strong, pseudo 0)
    row = [1.0, 0.0, -1.0]
    lse = math.log(sum(math.exp(v) for v in row))
    sup = math.log(math.exp(2.0) + 2.0) - 0.0
    assert out2.loss.item() == pytest.approx(sup + (lse - row[0]), rel=1e-5)
    summary = method.summary()
    assert summary["threshold"] == pytest.approx([0.5, 0.1, 0.0])
    assert summary["memory_used"] == pytest.approx(4 / 6)


def test_without_warmup_the_thresholds_differ() -> None:
    method = FlexMatch(full_config("flexmatch", p_cutoff=0.5, thresh_warmup=False), setup())
    method.training_loss(ctx_for(*STEP1))
    # sigma = 1, 1, 0 over max sigma = 1: beta = 1, 1, 0 -> thresholds 0.5, 0.5, 0 (not 1/14)
    torch.testing.assert_close(method.thresholds(), torch.tensor([0.5, 0.5, 0.0]))
    out2 = method.training_loss(ctx_for(*STEP2))
    assert out2.diagnostics["mask_rate"] == pytest.approx(2 / 3)  # idx 5: 0.45 < 0.5


def test_state_survives_a_checkpoint_exactly(tmp_path: Path) -> None:
    config = full_config("flexmatch", p_cutoff=0.5)
    method = FlexMatch(config, setup())
    method.training_loss(ctx_for(*STEP1))
    method.training_loss(ctx_for(*STEP2))
    torch.save(method.state_dict(), tmp_path / "state.pt")
    restored = FlexMatch(config, setup())
    restored.load_state_dict(torch.load(tmp_path / "state.pt"))
    a, b = method.training_loss(ctx_for(*STEP3)), restored.training_loss(ctx_for(*STEP3))
    assert a.loss.item() == b.loss.item()
    assert a.diagnostics["mask_rate"] == b.diagnostics["mask_rate"]
    assert torch.equal(a.diagnostics["threshold"], b.diagnostics["threshold"])
    for key, value in method.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    # state_dict hands out copies: changing them does not change the method
    state = method.state_dict()
    state["selected_label"].fill_(2)
    assert method.selected_label.tolist() != [2] * 6
    with pytest.raises(ValueError, match="selected_label"):
        FlexMatch(config, setup(num_unlabelled=7)).load_state_dict(method.state_dict())


def test_a_checkpoint_from_before_the_rename_still_loads() -> None:
    """β was saved as ``classwise_acc`` before it was named ``learning_effect``."""
    config = full_config("flexmatch", p_cutoff=0.5)
    method = FlexMatch(config, setup())
    method.training_loss(ctx_for(*STEP1))
    method.training_loss(ctx_for(*STEP2))
    old = method.state_dict()
    old["classwise_acc"] = old.pop("learning_effect")
    restored = FlexMatch(config, setup())
    restored.load_state_dict(old)
    assert torch.equal(restored.beta, method.beta) and restored.beta.abs().sum() > 0
    assert torch.equal(restored.selected_label, method.selected_label)


def test_config_file_defaults_and_registry() -> None:
    text, block = method_config("flexmatch")
    assert text.startswith("# @package _global_")
    assert block["name"] == "flexmatch"
    method = get_method("flexmatch").cls(block, setup())
    assert isinstance(method, FlexMatch)
    s = method.settings
    assert (s.p_cutoff, s.lambda_u, s.thresh_warmup, s.mapping) == (
        0.95,
        1.0,
        True,
        "convex",
    )
    with pytest.raises(ConfigError, match="mapping"):
        FlexMatch(full_config("flexmatch", mapping="concave"), setup())
