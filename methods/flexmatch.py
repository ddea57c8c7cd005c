"""FlexMatch (Zhang et al., NeurIPS 2021), as in USB's ``FlexMatchThresholdingHook``.

Each unlabelled sample's latest confident pseudo-label is remembered by dataset index
(``selected_label``, -1 = never confident). The learning effect σ(c) is how many remembered
labels are c; β(c) = σ(c) / max(max_c σ, #unused) with threshold warm-up, else σ(c) / max_c σ;
class c's threshold is p_cutoff · M(β(c)) with M(x) = x / (2 − x) ("convex") or x ("linear").

Order within a step, as in USB: the mask uses the thresholds from the memory as it stood
*before* this batch; then samples with max prob ≥ p_cutoff (USB: ``max_probs.ge(p_cutoff)``)
are written to the memory and β is recomputed. β starts at 0, so every threshold starts at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.method import Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.settings import setting
from harness.ssl import (
    MAPPINGS,
    load_tensor_state,
    mapping,
    pseudo_label_step,
    ramp_weight,
    tensor_state,
)


def learning_effect(selected: Tensor, num_classes: int, warmup: bool, previous: Tensor) -> Tensor:
    """β per class from the memory ``selected`` (-1 = unused); ``previous`` when USB skips.

    USB leaves β unchanged while the largest bin (the unused one included) holds every sample.
    """
    counts = torch.bincount(selected + 1, minlength=num_classes + 1)
    unused, sigma = counts[0], counts[1:]
    if int(counts.max()) >= len(selected):
        return previous.clone()
    denom = torch.maximum(sigma.max(), unused) if warmup else sigma.max()
    return sigma.float() / denom.float()


def flexmatch_thresholds(beta: Tensor, p_cutoff: float, mapping_name: str) -> Tensor:
    """Per-class thresholds p_cutoff · M(β(c))."""
    return p_cutoff * mapping(mapping_name)(beta)


def remember_(selected: Tensor, indices: Tensor, probs: Tensor, p_cutoff: float) -> None:
    """In place: write the pseudo-label of every sample with max prob ≥ p_cutoff at its index."""
    max_probs, pseudo = probs.max(dim=-1)
    select = max_probs.ge(p_cutoff)
    selected[indices[select]] = pseudo[select]


@dataclass(frozen=True)
class FlexMatchSettings:
    """``configs/method/flexmatch.yaml``."""

    p_cutoff: float = setting(low=0.0, high=1.0)  # upper threshold; the memory's confidence
    lambda_u: float = setting()  # weight of the unlabelled loss
    lambda_u_ramp: float = setting(low=0.0, high=1.0)  # lambda_u ramps up over this fraction
    thresh_warmup: bool = setting()  # count never-confident samples in β's denominator
    mapping: str = setting(choices=tuple(MAPPINGS))  # M(β)


@register_method("flexmatch", "FlexMatch: FixMatch with per-class thresholds from learning effects")
class FlexMatch(Method):
    """FlexMatch with curriculum pseudo-labelling (per-class flexible thresholds)."""

    uses_unlabelled = True
    adaptive_thresholds = True
    Settings = FlexMatchSettings
    settings: FlexMatchSettings

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.selected_label = torch.full((setup.num_unlabelled,), -1, dtype=torch.long)
        self.beta = torch.zeros(setup.num_classes)  # β(c), the learning effect of each class

    def thresholds(self) -> Tensor:
        """The current per-class thresholds."""
        return flexmatch_thresholds(self.beta, self.settings.p_cutoff, self.settings.mapping)

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · masked CE with per-class thresholds; then update the memory."""
        step = pseudo_label_step(ctx, "flexmatch", self._thresholds_on)
        indices = step.unlabelled.indices.to(step.probs.device)
        remember_(self.selected_label, indices, step.probs, self.settings.p_cutoff)
        self.beta = learning_effect(
            self.selected_label, self.setup.num_classes, self.settings.thresh_warmup, self.beta
        )
        weight = self.settings.lambda_u * ramp_weight(
            ctx.step, ctx.total_steps, self.settings.lambda_u_ramp
        )
        return StepOutput(step.loss(weight), step.diagnostics(ctx.num_classes))

    def _thresholds_on(self, probs: Tensor) -> Tensor:
        """The thresholds from the memory as it stands before this batch, on ``probs``' device
        (where the memory moves too)."""
        self.selected_label = self.selected_label.to(probs.device)
        self.beta = self.beta.to(probs.device)
        return self.thresholds()

    def _state_tensors(self) -> dict[str, Tensor]:
        return {"selected_label": self.selected_label, "learning_effect": self.beta}

    def state_dict(self) -> dict[str, Any]:
        """The pseudo-label memory and the learning effects β (CPU copies)."""
        return tensor_state(**self._state_tensors())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; sizes must match this dataset. A checkpoint written
        before β was named for what it holds keeps it under ``classwise_acc``."""
        if "classwise_acc" in state and "learning_effect" not in state:
            state = {**state, "learning_effect": state["classwise_acc"]}
        restored = load_tensor_state(state, self._state_tensors(), "flexmatch")
        self.selected_label = restored["selected_label"]
        self.beta = restored["learning_effect"]

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds and learning effects, and the share of samples used."""
        used = (self.selected_label >= 0).float().mean()
        return {
            "threshold": self.thresholds().cpu().tolist(),
            "learning_effect": self.beta.cpu().tolist(),
            "memory_used": float(used) if len(self.selected_label) else 0.0,
        }
