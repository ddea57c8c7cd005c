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
from typing import Any

import torch
from torch import Tensor

from harness.errors import ConfigError
from harness.method import Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.ssl import (
    forward_logits,
    load_tensor_state,
    mapping,
    masked_cross_entropy,
    pseudo_label_stats,
    ramp_weight,
    require_unlabelled,
    supervised_loss,
    tensor_state,
    threshold_mask,
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


@register_method("flexmatch", "FlexMatch: FixMatch with per-class thresholds from learning effects")
class FlexMatch(Method):
    """FlexMatch with curriculum pseudo-labelling (per-class flexible thresholds)."""

    uses_unlabelled = True
    adaptive_thresholds = True

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.p_cutoff = float(self.setting("p_cutoff"))
        self.lambda_u = float(self.setting("lambda_u"))
        self.lambda_u_ramp = float(self.setting("lambda_u_ramp"))
        self.thresh_warmup = bool(self.setting("thresh_warmup"))
        self.mapping = str(self.setting("mapping"))
        if not 0.0 <= self.p_cutoff <= 1.0:
            raise ConfigError(f"method.p_cutoff must be in [0, 1], got {self.p_cutoff}")
        mapping(self.mapping)  # an unknown name fails here, not at the first step
        self.selected_label = torch.full((setup.num_unlabelled,), -1, dtype=torch.long)
        self.classwise_acc = torch.zeros(setup.num_classes)

    def thresholds(self) -> Tensor:
        """The current per-class thresholds."""
        return flexmatch_thresholds(self.classwise_acc, self.p_cutoff, self.mapping)

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · masked CE with per-class thresholds; then update the memory."""
        u = require_unlabelled(ctx, "flexmatch")
        logits_x, logits_w, logits_s = forward_logits(
            ctx.student, ctx.labelled.images, u.weak, u.strong
        )
        device = logits_w.device
        self.selected_label = self.selected_label.to(device)
        self.classwise_acc = self.classwise_acc.to(device)
        probs = logits_w.detach().float().softmax(dim=-1)
        thresholds = self.thresholds()
        mask, pseudo = threshold_mask(probs, thresholds)
        remember_(self.selected_label, u.indices.to(device), probs, self.p_cutoff)
        self.classwise_acc = learning_effect(
            self.selected_label, self.setup.num_classes, self.thresh_warmup, self.classwise_acc
        )
        loss_sup = supervised_loss(logits_x, ctx.labelled.targets)
        loss_unsup = masked_cross_entropy(logits_s, pseudo, mask)
        diagnostics: dict[str, float | Tensor] = {
            "loss_sup": float(loss_sup.detach()),
            "loss_unsup": float(loss_unsup.detach()),
            **pseudo_label_stats(mask, pseudo, u.hidden_targets),
            "threshold": thresholds.cpu(),
        }
        weight = self.lambda_u * ramp_weight(ctx.step, ctx.total_steps, self.lambda_u_ramp)
        return StepOutput(loss_sup + weight * loss_unsup, diagnostics)

    def _state_tensors(self) -> dict[str, Tensor]:
        return {"selected_label": self.selected_label, "classwise_acc": self.classwise_acc}

    def state_dict(self) -> dict[str, Any]:
        """The pseudo-label memory and the learning effects (CPU copies)."""
        return tensor_state(**self._state_tensors())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; sizes must match this dataset."""
        restored = load_tensor_state(state, self._state_tensors(), "flexmatch")
        self.selected_label = restored["selected_label"]
        self.classwise_acc = restored["classwise_acc"]

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds and learning effects, and the share of samples used."""
        used = (self.selected_label >= 0).float().mean()
        return {
            "threshold": self.thresholds().cpu().tolist(),
            "learning_effect": self.classwise_acc.cpu().tolist(),
            "memory_used": float(used) if len(self.selected_label) else 0.0,
        }
