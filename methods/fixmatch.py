"""FixMatch (Sohn et al., NeurIPS 2020), as in USB's ``fixmatch``.

One concatenated student pass on [labelled weak, unlabelled weak, unlabelled strong]; the
pseudo-label is the argmax of the detached weak-view softmax, kept where its probability is
``>= p_cutoff`` (USB: ``max_probs.ge(p_cutoff)``); the strong view learns it with cross-entropy
normalised by the unlabelled batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import Method, StepContext, StepOutput
from harness.registry import register_method
from harness.settings import setting
from harness.ssl import pseudo_label_step


@dataclass(frozen=True)
class FixMatchSettings:
    """``configs/method/fixmatch.yaml``."""

    p_cutoff: float = setting(low=0.0, high=1.0)  # confidence threshold (inclusive)
    lambda_u: float = setting()  # weight of the unlabelled loss


@register_method("fixmatch", "FixMatch: confident weak-view pseudo-labels learnt on strong views")
class FixMatch(Method):
    """FixMatch with a fixed confidence threshold ``p_cutoff`` and weight ``lambda_u``."""

    uses_unlabelled = True
    Settings = FixMatchSettings
    settings: FixMatchSettings

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · masked CE(strong view, confident weak-view pseudo-label)."""
        step = pseudo_label_step(ctx, "fixmatch", lambda probs: self.settings.p_cutoff)
        return StepOutput(step.loss(self.settings.lambda_u), step.diagnostics(ctx.num_classes))
