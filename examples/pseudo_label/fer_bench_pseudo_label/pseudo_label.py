"""Pseudo-Label (Lee, ICML 2013 workshop), as USB's ``pseudolabel``: the student's own
confident predictions on unlabelled images become hard targets for the same view.

One student pass on [labelled, unlabelled weak]; the pseudo-label is the argmax of the detached
weak-view softmax, kept where its probability is ``>= p_cutoff``; its cross-entropy (normalised
by the unlabelled batch size) is weighted by ``lambda_u``, ramped up linearly over the first
``unsup_warmup`` of the run as Lee's schedule ramps alpha(t).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import yaml

from harness.method import Method, StepContext, StepOutput
from harness.registry import register_method
from harness.settings import setting
from harness.ssl import forward_logits, pseudo_label_step, ramp_weight, require_unlabelled


@dataclass(frozen=True)
class PseudoLabelSettings:
    """``pseudo_label.yaml``: read strictly (a missing or unknown key, a value out of range,
    is one clear error before training)."""

    p_cutoff: float = setting(low=0.0, high=1.0)  # keep a prediction at least this confident
    lambda_u: float = setting(low=0.0)  # weight of the unlabelled loss once ramped up
    unsup_warmup: float = setting(low=0.0, high=1.0)  # ramp over this fraction of the run


@register_method("pseudo_label", "Pseudo-Label: confident weak-view predictions as hard targets")
class PseudoLabel(Method):
    """Hard pseudo-labels above ``p_cutoff`` on the weak view, weight ramped over the run."""

    uses_unlabelled = True
    Settings = PseudoLabelSettings
    settings: PseudoLabelSettings
    # The package's YAML is the method's config (fer-bench reads default_config for a method
    # with no file in its own configs/method/): the one place the defaults live.
    default_config = yaml.safe_load(files(__package__).joinpath("pseudo_label.yaml").read_text())

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """L_sup + lambda_u · ramp(t) · masked CE(weak view, its own confident argmax)."""
        weak = require_unlabelled(ctx, "pseudo_label").weak
        logits_x, logits_w = forward_logits(ctx.student, ctx.labelled.images, weak)
        # The weak view learns its own pseudo-labels: it takes the strong view's place in
        # fer-bench's pseudo-labelling skeleton (which detaches it for the pseudo-labels).
        step = pseudo_label_step(
            ctx, "pseudo_label", lambda probs: self.settings.p_cutoff,
            logits=(logits_x, logits_w, logits_w),
        )  # fmt: skip
        ramp = ramp_weight(ctx.step, ctx.total_steps, self.settings.unsup_warmup)
        weight = self.settings.lambda_u * ramp
        return StepOutput(step.loss(weight), step.diagnostics(ctx.num_classes, unsup_weight=weight))
