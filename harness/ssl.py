"""Building blocks shared by the semi-supervised methods (USB's conventions).

Small pure functions: one concatenated forward, the supervised and masked losses, the
pseudo-label diagnostics, and an in-place EMA for the methods' running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
