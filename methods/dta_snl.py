"""DTA+SNL (Cai et al., arXiv 2601.05556): dynamic threshold and selective negative learning.

The paper's formulas are not public; this is the reconstruction in
``design/dta_snl.md``, every symbol a config key (see ``configs/method/dta_snl.yaml``).

* Teacher (EMA, eval mode) on the weak view gives p, ŷ = argmax p, p̂ = max p; the student
  learns on the strong view (q) and on the labelled weak views (class-balanced batches); the
  unlabelled weak view joins the student's one pass for batch-norm statistics only.
* DTA: g ← m·g + (1−m)·mean(p̂), s_c ← m·s_c + (1−m)·mean(p_c), both starting at 1/C;
  β_c = s_c / max s; τ_c = clamp(g·M(β_c), tau_min, tau_max). Order within a step (as USB's
  FreeMatch): update g and s with *this* batch first, then compute τ, then the mask p̂ ≥ τ_ŷ.
  ``dta=false``: τ_c = tau_max (g and s are still tracked, for the logs).
* L_pos = Σ_i mask_i·CE(q_i, ŷ_i) / B (FixMatch's normalisation by the batch size).
* SNL on rejected samples (p̂ < τ_ŷ): pairs (i, k) with p_ik < tau_neg and k ≠ ŷ_i;
  L_neg = −(1/|S|) Σ log(max(1 − q_ik, 1e-7)); 0 when S is empty.
* LAE + RFD: one neck installed by :meth:`DTASNL.wrap_model` (so the EMA teacher has it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import ConfigError
from harness.method import Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.ssl import (
    ema_update_,
    forward_logits,
    masked_cross_entropy,
    pseudo_label_stats,
    supervised_loss,
)

MAPPINGS = {"convex": lambda beta: beta / (2.0 - beta), "linear": lambda beta: beta}
NEG_EPS = 1e-7  # floor of 1 − q in L_neg, so a confident wrong student gives a finite loss


@dataclass(frozen=True)
class DTAState:
    """DTA's running statistics: stage confidence g (0-d) and class status s (C)."""

    g: Tensor
    s: Tensor

    @staticmethod
    def initial(num_classes: int) -> DTAState:
        """g₀ = 1/C and s₀ = 1/C per class (so every β starts at 1)."""
        return DTAState(
            torch.tensor(1.0 / num_classes), torch.full((num_classes,), 1 / num_classes)
        )

    def to(self, device: torch.device) -> DTAState:
        """The same state on ``device``."""
        return DTAState(self.g.to(device), self.s.to(device))


def dta_update(state: DTAState, probs: Tensor, momentum: float) -> DTAState:
    """The state after one batch of teacher weak-view probabilities ``probs`` (B×C)."""
    g, s = state.g.clone(), state.s.clone()
    ema_update_(g, probs.max(dim=-1).values.mean(), momentum)
    ema_update_(s, probs.mean(dim=0), momentum)
    return DTAState(g, s)


def dta_thresholds(state: DTAState, mapping: str, tau_min: float, tau_max: float) -> Tensor:
    """Per-class thresholds τ_c = clamp(g · M(s_c / max s), tau_min, tau_max)."""
    beta = state.s / state.s.max()
    return (state.g * MAPPINGS[mapping](beta)).clamp(tau_min, tau_max)


def positive_mask(probs: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """(mask, pseudo-labels): p̂ ≥ τ of the predicted class (inclusive)."""
    max_probs, pseudo = probs.max(dim=-1)
    return max_probs.ge(thresholds[pseudo]), pseudo


def complementary_labels(probs: Tensor, mask: Tensor, pseudo: Tensor, tau_neg: float) -> Tensor:
    """B×C boolean: (i, k) selected where sample i was rejected, p_ik < tau_neg and k ≠ ŷ_i."""
    not_pseudo = torch.ones_like(probs, dtype=torch.bool)
    not_pseudo[torch.arange(len(pseudo), device=probs.device), pseudo] = False
    return probs.lt(tau_neg) & not_pseudo & ~mask.bool().unsqueeze(1)


def negative_loss(logits_s: Tensor, pairs: Tensor) -> Tensor:
    """−mean over the selected pairs of log(1 − q_ik), q = softmax(strong logits); 0 if none."""
    if not pairs.any():
        return logits_s.new_zeros((), dtype=torch.float32)
    q = logits_s.float().softmax(dim=-1)
    return -torch.log((1.0 - q[pairs]).clamp_min(NEG_EPS)).mean()


def random_cell_dropout(x: Tensor, p: float, grid: int) -> Tensor:
    """RFD: per sample with probability ``p``, zero one random cell of a grid×grid partition.

    Every position is zeroed with probability p/grid² (cell chosen uniformly, whatever its
    size), so all *kept* positions are scaled by 1/(1 − p/grid²), as in inverted dropout:
    E[output] = x position by position. Draws from torch's global RNG (checkpointed).
    """
    b, _, h, w = x.shape
    drop = torch.rand(b, device=x.device) < p
    cell = torch.randint(grid * grid, (b,), device=x.device)
    rows = torch.arange(h, device=x.device) * grid // h  # cell row of each feature-map row
    cols = torch.arange(w, device=x.device) * grid // w
    cell_of = rows[:, None] * grid + cols[None, :]  # H×W cell index
    zero = drop[:, None, None] & (cell_of[None] == cell[:, None, None])  # B×H×W
    keep = (~zero).unsqueeze(1).to(x.dtype) / (1.0 - p / grid**2)
    return x * keep


class LocalAttentionDropout(nn.Module):
    """The DTA+SNL neck: local attention enhancement F' = F ⊙ (1 + A), with spatial attention
    A = sigmoid(conv1x1(relu(conv1x1(F)))), then random feature-map dropout (training only)."""

    def __init__(
        self, channels: int, hidden: int, local_attention: bool, drop_p: float, grid: int
    ) -> None:
        super().__init__()
        self.attention = (
            nn.Sequential(
                nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
            )
            if local_attention
            else None
        )
        self.drop_p, self.grid = drop_p, grid

    def attention_map(self, x: Tensor) -> Tensor:
        """A (B×1×H×W), in (0, 1)."""
        if self.attention is None:
            raise RuntimeError("local attention is disabled (local_attention=false)")
        return torch.sigmoid(self.attention(x))

    def forward(self, x: Tensor) -> Tensor:
        """B×C×H×W → B×C×H×W."""
        if self.attention is not None:
            x = x * (1.0 + self.attention_map(x))
        if self.training and self.drop_p > 0:
            x = random_cell_dropout(x, self.drop_p, self.grid)
        return x


def _check(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


@register_method("dta_snl", "DTA+SNL: dynamic thresholds, negative learning, local attention")
class DTASNL(Method):
    """DTA+SNL (reconstruction): EMA-teacher pseudo-labels with dynamic per-class thresholds,
    negative learning on rejected samples, and the attention + feature-dropout neck."""

    uses_unlabelled = True

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.m = float(config.get("m", 0.999))
        self.mapping = str(config.get("mapping", "convex"))
        self.tau_min = float(config.get("tau_min", 0.5))
        self.tau_max = float(config.get("tau_max", 0.95))
        self.lambda_u = float(config.get("lambda_u", 1.0))
        self.tau_neg = float(config.get("tau_neg", 0.05))
        self.lambda_neg = float(config.get("lambda_neg", 1.0))
        self.dta = bool(config.get("dta", True))
        self.snl = bool(config.get("snl", True))
        self.local_attention = bool(config.get("local_attention", True))
        self.attention_reduction = int(config.get("attention_reduction", 8))
        self.feature_drop_p = float(config.get("feature_drop_p", 0.5))
        self.feature_drop_grid = int(config.get("feature_drop_grid", 2))
        _check(
            self.mapping in MAPPINGS,
            f"method.mapping must be convex or linear, got {self.mapping!r}",
        )
        _check(0.0 <= self.m < 1.0, f"method.m must be in [0, 1), got {self.m}")
        _check(
            0.0 <= self.tau_min <= self.tau_max <= 1.0,
            f"method.tau_min and tau_max need 0 <= tau_min <= tau_max <= 1, got "
            f"{self.tau_min} and {self.tau_max}",
        )
        _check(0.0 <= self.tau_neg <= 1.0, f"method.tau_neg must be in [0, 1], got {self.tau_neg}")
        _check(
            0.0 <= self.feature_drop_p <= 1.0,
            f"method.feature_drop_p must be in [0, 1], got {self.feature_drop_p}",
        )
        _check(
            self.feature_drop_grid >= 2,
            f"method.feature_drop_grid must be >= 2, got {self.feature_drop_grid}",
        )
        _check(
            self.attention_reduction >= 1,
            f"method.attention_reduction must be >= 1, got {self.attention_reduction}",
        )
        self.state = DTAState.initial(setup.num_classes)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Install the LAE + RFD neck as ``model.neck`` (after any neck already there)."""
        if not self.local_attention and self.feature_drop_p == 0:
            return model
        channels = int(model.num_features)
        hidden = max(8, channels // self.attention_reduction)
        neck = LocalAttentionDropout(
            channels, hidden, self.local_attention, self.feature_drop_p, self.feature_drop_grid
        )
        model.neck = (
            neck if isinstance(model.neck, nn.Identity) else nn.Sequential(model.neck, neck)
        )
        return model

    def thresholds(self) -> Tensor:
        """The current per-class τ (tau_max everywhere with ``dta=false``)."""
        if not self.dta:
            return torch.full_like(self.state.s, self.tau_max)
        return dta_thresholds(self.state, self.mapping, self.tau_min, self.tau_max)

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """Update DTA, then L_sup + lambda_u·L_pos + lambda_neg·L_neg."""
        u = ctx.unlabelled
        if u is None:
            raise RuntimeError("dta_snl needs an unlabelled batch (uses_unlabelled = True)")
        with torch.no_grad():
            (logits_t,) = forward_logits(ctx.teacher, u.weak)
        probs = logits_t.float().softmax(dim=-1)
        # The weak view joins the student's pass for its batch-norm statistics only (FixMatch's
        # one pass): without it the running statistics the evaluated model uses are half those
        # of strongly augmented images: 27.9% instead of 36.5% top-1 after 400 steps on synthfer
        # at 5% labels (docs/methods_experiment.md).
        logits_x, _, logits_s = forward_logits(ctx.student, ctx.labelled.images, u.weak, u.strong)
        self.state = dta_update(self.state.to(probs.device), probs, self.m)
        thresholds = self.thresholds()
        mask, pseudo = positive_mask(probs, thresholds)
        loss_sup = supervised_loss(logits_x, ctx.labelled.targets)
        loss_pos = masked_cross_entropy(logits_s, pseudo, mask)
        loss = loss_sup + self.lambda_u * loss_pos
        diagnostics: dict[str, float | Tensor] = {
            "loss_sup": float(loss_sup.detach()),
            "loss_unsup": float(loss_pos.detach()),
            **pseudo_label_stats(mask, pseudo, u.hidden_targets),
            "threshold": thresholds.cpu(),
            "g": float(self.state.g),
        }
        if self.snl:
            pairs = complementary_labels(probs, mask, pseudo, self.tau_neg)
            loss_neg = negative_loss(logits_s, pairs)
            loss = loss + self.lambda_neg * loss_neg
            n_pairs = int(pairs.sum())
            wrong = pairs.gather(1, u.hidden_targets.view(-1, 1).to(pairs.device)).sum()
            diagnostics["loss_neg"] = float(loss_neg.detach())
            diagnostics["neg_pairs"] = float(n_pairs)
            diagnostics["neg_error_rate"] = float(wrong) / n_pairs if n_pairs else float("nan")
        return StepOutput(loss, diagnostics)

    def state_dict(self) -> dict[str, Any]:
        """g and s (CPU copies)."""
        return {"g": self.state.g.detach().cpu().clone(), "s": self.state.s.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the class count must match."""
        if state["s"].shape != self.state.s.shape:
            raise ValueError(
                f"dta_snl state has {tuple(state['s'].shape)} classes; "
                f"this run has {tuple(self.state.s.shape)}"
            )
        device = self.state.s.device
        self.state = DTAState(state["g"].clone().to(device), state["s"].clone().to(device))

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds, g, s and β."""
        return {
            "threshold": self.thresholds().cpu().tolist(),
            "g": float(self.state.g),
            "class_status": self.state.s.cpu().tolist(),
            "beta": (self.state.s / self.state.s.max()).cpu().tolist(),
        }
