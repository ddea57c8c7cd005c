"""Ada-CM (Li et al., CVPR 2022), after the authors' code (github.com/hangyu94/Ada-CM).

* Model (the original's ``models/backbone.py``): the pooled feature goes through Dropout(0.5)
  and is L2-normalised; that unit embedding is what the classifier reads *and* what the
  contrastive loss compares. :meth:`AdaCM.wrap_model` builds it around the harness's model
  (so the EMA teacher and the evaluated model have it too); ``method.dropout`` is its rate.
* Thresholds: every class starts at ``tau_floor`` (0.8). After epoch e (e = 1, 2, ...; the
  original's ``adaptive_threshold_generate``) the EMA model predicts the labelled set and
  τ_c = max(tau_floor, tau_scale · sigmoid(e) · mean max-prob of the correctly classified
  class-c samples), tau_floor for a class with none. Here e = step // epoch_steps, so at step 0
  (no epoch done yet) the thresholds stay at the floor, as in the original.
* Pseudo-labels from the student's (detached) weak view; samples with max prob ≥ τ_ŷ get CE on
  the strong view (Lu, divided by the unlabelled batch size, as ``(CE * mask).mean()``).
* The other samples get SimCLR's NT-Xent (the original's ``SupConLoss`` without labels,
  temperature 0.07) between their L2-normalised embeddings of two views (Ls).
* Loss 0.5·Lx + Lu + 0.1·Ls.

The deliberate substitutions, and why, are in docs/methods/adacm.md: one weak view instead of
two (the pseudo-label comes from it, and Ls contrasts the weak and strong views), one forward
pass over all views (shared batch-norm statistics), and thresholds computed on eval transforms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.method import LabelledEvalBatches, Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.settings import setting
from harness.ssl import load_tensor_state, pseudo_label_step, require_unlabelled, tensor_state


def adacm_thresholds(
    probs: Tensor, targets: Tensor, epoch: int, floor: float = 0.8, scale: float = 0.97
) -> Tensor:
    """Per-class τ from labelled-set probabilities (N×C) and targets after ``epoch`` epochs."""
    num_classes = probs.shape[1]
    max_probs, predicted = probs.max(dim=-1)
    correct = predicted.eq(targets)
    counts = torch.bincount(targets[correct], minlength=num_classes).float()
    sums = torch.zeros(num_classes, device=probs.device).index_add_(
        0, targets[correct], max_probs[correct].float()
    )
    mean_conf = sums / counts.clamp_min(1)  # 0 for a class without a correct sample → floor
    sigmoid = 1.0 / (1.0 + math.exp(-epoch))
    return (scale * sigmoid * mean_conf).clamp_min(floor)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss over 2N anchors: the other view is the positive, all 2N − 1 others the
    denominator; embeddings are L2-normalised first. 0 for an empty batch."""
    n = len(z1)
    if n == 0:
        return z1.new_zeros((), dtype=torch.float32)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positives)


class NormalisedEmbeddingNet(nn.Module):
    """Ada-CM's model around a harness model (``forward_features`` → B×C×h×w, ``classifier``):
    embedding = L2-normalise(Dropout(p)(global average pool)); logits = classifier(embedding).

    The original (``models/backbone.py``): ``feature = F.normalize(output(avg_pool(base(x))))``
    with ``output = Sequential(Dropout(0.5), Flatten())`` and ``out = classifier(feature)``.
    The wrapped model's own dropout before its classifier is not used.
    """

    def __init__(self, model: nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.model = model
        self.dropout = nn.Dropout(drop_rate)
        self.num_features = model.num_features

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, embedding)``: the embedding has unit L2 norm (after dropout in training)."""
        pooled = self.model.forward_features(x).mean(dim=(2, 3))
        embedding = F.normalize(self.dropout(pooled), dim=1)
        return self.model.classifier(embedding), embedding

    def forward(self, x: Tensor) -> Tensor:
        """Logits, B × num_classes."""
        return self.forward_with_embedding(x)[0]


@dataclass(frozen=True)
class AdaCMSettings:
    """``configs/method/adacm.yaml``."""

    dropout: float = setting(low=0.0, high=1.0, high_open=True)  # before the embedding
    lambda_x: float = setting()  # weight of the labelled cross-entropy Lx
    lambda_u: float = setting()  # weight of the confident pseudo-label loss Lu
    lambda_s: float = setting()  # weight of the contrastive loss Ls
    temperature: float = setting(low=0.0, low_open=True)  # NT-Xent temperature
    tau_floor: float = setting()  # lowest threshold; every class starts here
    tau_scale: float = setting()  # τ_c = max(tau_floor, tau_scale · sigmoid(e) · confidence)
    epochs: int = setting(low=1)  # the run is cut into this many epochs without epoch_steps
    epoch_steps: int | None = setting(low=1)  # steps per epoch (null: steps // epochs)


@register_method("adacm", "Ada-CM: adaptive per-class confidence margin + contrastive low-conf")
class AdaCM(Method):
    """Ada-CM: per-epoch per-class thresholds from the EMA model on the labelled set; CE on
    confident unlabelled samples, contrastive learning on the rest."""

    uses_unlabelled = True
    adaptive_thresholds = True
    Settings = AdaCMSettings
    settings: AdaCMSettings

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        s = self.settings
        # null epoch_steps: the run is cut into `epochs` epochs, like the original's 20 × 800.
        self.interval_steps = (
            s.epoch_steps if s.epoch_steps is not None else max(1, setup.total_steps // s.epochs)
        )
        self.threshold = torch.full((setup.num_classes,), s.tau_floor)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The original's head: classifier and contrastive loss on the L2-normalised embedding
        taken after Dropout(``method.dropout``)."""
        return NormalisedEmbeddingNet(model, self.settings.dropout)

    def on_interval(
        self, teacher: nn.Module, labelled_batches: LabelledEvalBatches, step: int
    ) -> None:
        """Recompute the thresholds with the EMA model after each finished epoch."""
        epoch = step // self.interval_steps
        if epoch == 0:
            self.threshold = torch.full_like(self.threshold, self.settings.tau_floor)
            return
        probs, targets = [], []
        with torch.no_grad():
            for batch in labelled_batches():
                probs.append(teacher(batch.images).float().softmax(dim=-1))
                targets.append(batch.targets)
        self.threshold = adacm_thresholds(
            torch.cat(probs),
            torch.cat(targets).to(probs[0].device),
            epoch,
            self.settings.tau_floor,
            self.settings.tau_scale,
        ).cpu()

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """lambda_x·Lx + lambda_u·Lu (confident) + lambda_s·Ls (contrastive, low-confidence)."""
        u = require_unlabelled(ctx, "adacm")
        images = (ctx.labelled.images, u.weak, u.strong)
        # One pass over all views: shared batch-norm statistics, as harness.ssl.forward_logits.
        logits, emb = ctx.student.forward_with_embedding(torch.cat(images))
        sizes = [len(x) for x in images]
        _, emb_w, emb_s = emb.split(sizes)
        step = pseudo_label_step(
            ctx,
            "adacm",
            lambda probs: self.threshold.to(probs.device),  # original: .ge
            logits=tuple(logits.split(sizes)),
        )
        s, mask = self.settings, step.mask
        loss_s = nt_xent(emb_w[~mask], emb_s[~mask], s.temperature)
        loss = s.lambda_x * step.loss_sup + s.lambda_u * step.loss_unsup + s.lambda_s * loss_s
        return StepOutput(
            loss, step.diagnostics(ctx.num_classes, loss_extra=float(loss_s.detach()))
        )

    def state_dict(self) -> dict[str, Any]:
        """The current per-class thresholds (a CPU copy)."""
        return tensor_state(threshold=self.threshold)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the class count must match."""
        self.threshold = load_tensor_state(state, {"threshold": self.threshold}, "adacm")[
            "threshold"
        ]

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds and the epoch length used."""
        return {"threshold": self.threshold.tolist(), "epoch_steps": self.interval_steps}
