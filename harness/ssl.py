"""Building blocks shared by the semi-supervised methods (USB's conventions).

The skeleton every pseudo-labelling method shares (:func:`pseudo_label_step`: unlabelled batch,
logits, weak-view probabilities, threshold mask, supervised and masked losses, diagnostics), so
that a method states only its thresholds and its extra terms; and the small pure functions it is
made of: one concatenated forward, the supervised and masked losses, the confidence-threshold
mask and the threshold mappings, the pseudo-label diagnostics, an in-place EMA for the methods'
running statistics, the guard for a method that needs unlabelled data, and the checkpoint round
trip of a method's tensor state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import StepContext, UnlabelledBatch

# FlexMatch's M(β) (and DTA's): convex = β / (2 − β), linear = β.
MAPPINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "convex": lambda beta: beta / (2.0 - beta),
    "linear": lambda beta: beta,
}


def forward_logits(model: nn.Module, *batches: Tensor) -> list[Tensor]:
    """Run ``model`` once on the concatenation of ``batches`` and split the logits back.

    One pass means the labelled, weak and strong views share batch-norm statistics, as in
    USB/FixMatch (separate passes would give each view its own BN statistics).
    """
    if not batches:
        raise ValueError("forward_logits needs at least one batch")
    sizes = [len(b) for b in batches]
    logits = model(torch.cat(batches)) if len(batches) > 1 else model(batches[0])
    return list(logits.split(sizes))


def supervised_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (B×C) against int64 ``targets`` (B)."""
    return F.cross_entropy(logits.float(), targets)


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """``sum(mask * CE) / len(mask)``: FixMatch's normalisation by the unlabelled batch size.

    Dividing by the batch size (not by the number of kept samples) makes the unsupervised
    term grow with the mask rate, as in the papers. ``mask`` may be boolean or float weights.
    """
    per_sample = F.cross_entropy(logits.float(), targets, reduction="none")
    return (per_sample * mask.to(per_sample.dtype)).sum() / max(len(mask), 1)


def pseudo_label_stats(mask: Tensor, pseudo: Tensor, hidden: Tensor) -> dict[str, float]:
    """Share of unlabelled samples kept (``mask_rate``) and accuracy of their pseudo-labels
    against the hidden true labels (``pseudo_label_acc``; NaN when none is kept)."""
    kept = mask.bool()
    n_kept = int(kept.sum())
    rate = n_kept / len(kept) if len(kept) else 0.0
    if n_kept == 0:
        return {"mask_rate": rate, "pseudo_label_acc": float("nan")}
    correct = (pseudo[kept] == hidden.to(pseudo.device)[kept]).sum()
    return {"mask_rate": rate, "pseudo_label_acc": float(correct) / n_kept}


@torch.no_grad()
def ema_update_(buffer: Tensor, value: Tensor, momentum: float) -> None:
    """In place: ``buffer = momentum * buffer + (1 - momentum) * value``."""
    buffer.mul_(momentum).add_(value.to(buffer.dtype), alpha=1.0 - momentum)


def mapping(name: str) -> Callable[[Tensor], Tensor]:
    """The threshold mapping ``name`` (``method.mapping``); an unknown name is a ConfigError."""
    if name not in MAPPINGS:
        raise ConfigError(f"method.mapping must be one of {', '.join(MAPPINGS)}; got {name!r}")
    return MAPPINGS[name]


def threshold_mask(probs: Tensor, thresholds: Tensor | float) -> tuple[Tensor, Tensor]:
    """(mask, pseudo-labels) for probabilities ``probs`` (B×C): the argmax ŷ, kept where its
    probability is ``>=`` the threshold of ŷ (``thresholds``: one per class, or one for all).

    Inclusive, as USB's ``max_probs.ge(...)`` and Ada-CM's ``mask_generate``.
    """
    max_probs, pseudo = probs.max(dim=-1)
    if isinstance(thresholds, Tensor) and thresholds.ndim > 0:
        return max_probs.ge(thresholds.to(probs.device)[pseudo]), pseudo
    return max_probs.ge(thresholds), pseudo


def require_unlabelled(ctx: StepContext, method: str) -> UnlabelledBatch:
    """The step's unlabelled batch; a method that needs one and got none is a bug in the
    engine or in the method's ``uses_unlabelled``, said plainly."""
    if ctx.unlabelled is None:
        raise RuntimeError(f"{method} needs an unlabelled batch (set uses_unlabelled = True)")
    return ctx.unlabelled


def tensor_state(**tensors: Tensor) -> dict[str, Tensor]:
    """A method's state for a checkpoint: detached CPU copies (later changes to the method do
    not reach a saved state, nor the reverse)."""
    return {name: t.detach().cpu().clone() for name, t in tensors.items()}


def load_tensor_state(
    state: Mapping[str, Any], current: Mapping[str, Tensor], method: str
) -> dict[str, Tensor]:
    """Copies of ``state``'s tensors named in ``current``, on each current tensor's device.

    Raises ``ValueError`` naming the method and the tensor when a shape differs from the
    current one (a checkpoint of another dataset or class count), and ``KeyError`` for a
    missing tensor.
    """
    restored = {}
    for name, now in current.items():
        saved = state[name]
        if saved.shape != now.shape:
            raise ValueError(
                f"{method} state {name!r} has shape {tuple(saved.shape)}; this run's is "
                f"{tuple(now.shape)} (a checkpoint of another dataset or class count?)"
            )
        restored[name] = saved.detach().clone().to(now.device)
    return restored


def ramp_weight(step: int, total_steps: int, fraction: float) -> float:
    """The unlabelled loss's weight factor at ``step`` (0-based): linear from 1/(n) up to 1 over
    the first ``fraction`` of the run (n = fraction · total_steps steps), 1 after; 1 throughout
    when ``fraction`` is 0 (the methods' default: no ramp)."""
    ramp = fraction * total_steps
    return 1.0 if ramp <= 0 else min(1.0, (step + 1) / ramp)


@dataclass
class PseudoLabelStep:
    """One step of pseudo-labelling, as :func:`pseudo_label_step` computed it."""

    unlabelled: UnlabelledBatch
    logits_x: Tensor  # student, labelled weak views
    logits_s: Tensor  # student, unlabelled strong views
    probs: Tensor  # the weak-view probabilities the pseudo-labels come from (detached, float)
    thresholds: Tensor | float  # per class, or one for all
    mask: Tensor  # kept samples (max prob >= threshold of the pseudo-label)
    pseudo: Tensor  # argmax of ``probs``
    loss_sup: Tensor  # cross-entropy on the labelled batch
    loss_unsup: Tensor  # masked cross-entropy of the strong views against the pseudo-labels

    def loss(self, lambda_u: float) -> Tensor:
        """``loss_sup + lambda_u · loss_unsup`` (FixMatch's objective)."""
        return self.loss_sup + lambda_u * self.loss_unsup

    def diagnostics(self, num_classes: int, **extra: float | Tensor) -> dict[str, float | Tensor]:
        """The losses, mask rate and pseudo-label accuracy, the thresholds (one per class),
        and ``extra``, for the step log."""
        thresholds = self.thresholds
        per_class = (
            thresholds.cpu()
            if isinstance(thresholds, Tensor)
            else torch.full((num_classes,), thresholds)
        )
        return {
            "loss_sup": float(self.loss_sup.detach()),
            "loss_unsup": float(self.loss_unsup.detach()),
            **extra,
            **pseudo_label_stats(self.mask, self.pseudo, self.unlabelled.hidden_targets),
            "threshold": per_class,
        }


def pseudo_label_step(
    ctx: StepContext,
    method: str,
    thresholds: Callable[[Tensor], Tensor | float],
    *,
    teacher: bool = False,
    logits: tuple[Tensor, Tensor, Tensor] | None = None,
) -> PseudoLabelStep:
    """The shared skeleton of a pseudo-labelling step.

    The student runs once on [labelled weak, unlabelled weak, unlabelled strong] (or ``logits``
    are the caller's own pass); the pseudo-labels come from the detached weak-view softmax of
    the student, or with ``teacher`` from the EMA teacher's (run first, without gradients);
    ``thresholds(probs)`` gives the threshold of each class (or one for all), after any update
    of the method's statistics with this batch; the strong views learn the kept pseudo-labels
    (:func:`masked_cross_entropy`), the labelled batch its targets.
    """
    u = require_unlabelled(ctx, method)
    probs = None
    if teacher:
        with torch.no_grad():
            (logits_t,) = forward_logits(ctx.teacher, u.weak)
        probs = logits_t.float().softmax(dim=-1)
    if logits is None:
        logits = tuple(forward_logits(ctx.student, ctx.labelled.images, u.weak, u.strong))
    logits_x, logits_w, logits_s = logits
    if probs is None:
        probs = logits_w.detach().float().softmax(dim=-1)
    tau = thresholds(probs)
    mask, pseudo = threshold_mask(probs, tau)
    return PseudoLabelStep(
        unlabelled=u,
        logits_x=logits_x,
        logits_s=logits_s,
        probs=probs,
        thresholds=tau,
        mask=mask,
        pseudo=pseudo,
        loss_sup=supervised_loss(logits_x, ctx.labelled.targets),
        loss_unsup=masked_cross_entropy(logits_s, pseudo, mask),
    )
