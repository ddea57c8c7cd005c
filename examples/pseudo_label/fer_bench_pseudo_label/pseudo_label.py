"""Pseudo-Label (Lee, ICML 2013 workshop), as USB's ``pseudolabel``: the student's own
confident predictions on unlabelled images become hard targets for the same view.

One student pass on [labelled, unlabelled weak]; the pseudo-label is the argmax of the detached
weak-view softmax, kept where its probability is ``>= p_cutoff``; its cross-entropy (normalised
by the unlabelled batch size) is weighted by ``lambda_u``, ramped up linearly over the first
``unsup_warmup`` of the run as Lee's schedule ramps alpha(t).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import torch
import yaml

from harness.method import Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.ssl import (
    forward_logits,
    masked_cross_entropy,
    pseudo_label_stats,
    ramp_weight,
    require_unlabelled,
    supervised_loss,
    threshold_mask,
)


@register_method("pseudo_label", "Pseudo-Label: confident weak-view predictions as hard targets")
class PseudoLabel(Method):
    """Hard pseudo-labels above ``p_cutoff`` on the weak view, weight ramped over the run."""

    uses_unlabelled = True
    # The package's YAML is the method's config (fer-bench reads default_config for a method
    # with no file in its own configs/method/).
    default_config = yaml.safe_load(files(__package__).joinpath("pseudo_label.yaml").read_text())

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.p_cutoff = float(self.setting("p_cutoff"))
        self.lambda_u = float(self.setting("lambda_u"))
        self.unsup_warmup = float(self.setting("unsup_warmup"))

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · ramp(t) · masked CE(weak view, its own confident argmax)."""
        u = require_unlabelled(ctx, "pseudo_label")
        logits_x, logits_w = forward_logits(ctx.student, ctx.labelled.images, u.weak)
        probs = logits_w.detach().float().softmax(dim=-1)
        mask, pseudo = threshold_mask(probs, self.p_cutoff)
        loss_sup = supervised_loss(logits_x, ctx.labelled.targets)
        loss_unsup = masked_cross_entropy(logits_w, pseudo, mask)
        weight = self.lambda_u * ramp_weight(ctx.step, ctx.total_steps, self.unsup_warmup)
        # Diagnostics are plain numbers: .detach() first (float() of a tensor that requires
        # grad makes torch warn, at every step).
        diagnostics: dict[str, float | torch.Tensor] = {
            "loss_sup": float(loss_sup.detach()),
            "loss_unsup": float(loss_unsup.detach()),
            "unsup_weight": weight,
            **pseudo_label_stats(mask, pseudo, u.hidden_targets),
            "threshold": torch.full((ctx.num_classes,), self.p_cutoff),
        }
        return StepOutput(loss_sup + weight * loss_unsup, diagnostics)
