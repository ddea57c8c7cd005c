"""A model's predicted class for every image of a sequence, as the training evaluation and
``bench eval`` compute it (eval mode, the run's precision and memory layout, argmax)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from harness.data.streams import eval_batches
from harness.data.transforms import to_model_input
from harness.device import autocast


class Rows(Sequence[np.ndarray]):
    """A read-only view of some rows of an image sequence (no copy of the images)."""

    def __init__(self, images: Sequence[np.ndarray], rows: np.ndarray) -> None:
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.images[int(self.rows[i])]


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Sequence[np.ndarray],
    batch_size: int,
    device: torch.device,
    channels_last: bool,
    amp: bool,
    allowed: torch.Tensor | None = None,
) -> np.ndarray:
    """Predicted class of every image, in order (model in eval mode, then back as it was).

    With ``allowed`` (model class indices), the argmax is over those classes only: the other
    logits are masked to −inf (a class the test set lacks can never be predicted).
    """
    was_training = model.training
    model.eval()
    preds = []
    no_targets = np.zeros(len(images), dtype=np.int64)
    for batch, _ in eval_batches(images, no_targets, batch_size):
        with autocast(device, amp):
            logits = model(to_model_input(batch, device, channels_last))
        if allowed is not None:
            logits = logits.float()
            keep = allowed.to(logits.device)
            masked = torch.full_like(logits, float("-inf"))
            masked[:, keep] = logits[:, keep]
            logits = masked
        preds.append(logits.argmax(1).cpu())
    model.train(was_training)
    return torch.cat(preds).numpy()
