"""FixMatch (Sohn et al., NeurIPS 2020), as in USB's ``fixmatch``.

One concatenated student pass on [labelled weak, unlabelled weak, unlabelled strong]; the
pseudo-label is the argmax of the detached weak-view softmax, kept where its probability is
``>= p_cutoff`` (USB: ``max_probs.ge(p_cutoff)``); the strong view learns it with cross-entropy
normalised by the unlabelled batch size.
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
    masked_cross_entropy,
    pseudo_label_stats,
    require_unlabelled,
    supervised_loss,
    threshold_mask,
)


@register_method("fixmatch", "FixMatch: confident weak-view pseudo-labels learnt on strong views")
class FixMatch(Method):
    """FixMatch with a fixed confidence threshold ``p_cutoff`` and weight ``lambda_u``."""

    uses_unlabelled = True

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.p_cutoff = float(self.setting("p_cutoff"))
        self.lambda_u = float(self.setting("lambda_u"))
        if not 0.0 <= self.p_cutoff <= 1.0:
            raise ConfigError(f"method.p_cutoff must be in [0, 1], got {self.p_cutoff}")

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · masked CE(strong view, confident weak-view pseudo-label)."""
        u = require_unlabelled(ctx, "fixmatch")
        logits_x, logits_w, logits_s = forward_logits(
            ctx.student, ctx.labelled.images, u.weak, u.strong
        )
        probs = logits_w.detach().float().softmax(dim=-1)
        mask, pseudo = threshold_mask(probs, self.p_cutoff)
        loss_sup = supervised_loss(logits_x, ctx.labelled.targets)
        loss_unsup = masked_cross_entropy(logits_s, pseudo, mask)
        diagnostics: dict[str, float | Tensor] = {
            "loss_sup": float(loss_sup.detach()),
            "loss_unsup": float(loss_unsup.detach()),
            **pseudo_label_stats(mask, pseudo, u.hidden_targets),
            "threshold": torch.full((ctx.num_classes,), self.p_cutoff),
        }
        return StepOutput(loss_sup + self.lambda_u * loss_unsup, diagnostics)
