"""Supervised baseline: cross-entropy on the labelled batch only."""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import Method, StepContext, StepOutput
from harness.registry import register_method
from harness.ssl import forward_logits, supervised_loss


@dataclass(frozen=True)
class SupervisedSettings:
    """``configs/method/supervised.yaml``: no settings (any key there is refused)."""


@register_method(
    "supervised",
    "Labelled data only (the lower bound; --labels 100% is the fully supervised reference)",
)
class Supervised(Method):
    """Labelled data only; same backbone, schedule and augmentation as the SSL methods."""

    uses_unlabelled = False
    Settings = SupervisedSettings

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """Mean cross-entropy of the student on the labelled weak views."""
        (logits,) = forward_logits(ctx.student, ctx.labelled.images)
        loss = supervised_loss(logits, ctx.labelled.targets)
        return StepOutput(loss, {"loss_sup": float(loss.detach())})
