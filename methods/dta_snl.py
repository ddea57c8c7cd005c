"""DTA+SNL (Cai et al., arXiv 2601.05556): dynamic threshold and selective negative learning.

The paper's formulas are not public; this is the project's reconstruction, specified (with its
revision history) in ``docs/methods/dta_snl.md``; every symbol is a config key
(``configs/method/dta_snl.yaml``). This file follows revision 2.

* Teacher (EMA, eval mode) on the weak view gives p, ŷ = argmax p, p̂ = max p; the student
  learns on the strong view (q) and on the labelled weak views (class-balanced batches); the
  unlabelled weak view joins the student's one pass for batch-norm statistics only.
* DTA: g ← m·g + (1−m)·mean(p̂), s_c ← m·s_c + (1−m)·mean(p_c). Revision 2
  (``bias_correction=true``): both start at 0 and are read as ĝ = g/(1−m^t), ŝ = s/(1−m^t)
  after t updates; revision 1 (``false``): both start at 1/C, read as they are.
  β_c = ŝ_c / max ŝ; τ_c = clamp(ĝ·M(β_c), tau_min, tau_max). Order within a step (as USB's
  FreeMatch): update g and s with *this* batch first, then compute τ, then the mask p̂ ≥ τ_ŷ.
  ``dta=false``: τ_c = tau_max (g and s are still tracked, for the logs).
* L_pos = Σ_i mask_i·CE(q_i, ŷ_i) / B (FixMatch's normalisation by the batch size).
* SNL on rejected samples (p̂ < τ_ŷ): pairs (i, k) with p_ik < tau_neg and k ≠ ŷ_i;
  L_neg = −(1/|S|) Σ log(1 − q_ik), with log(1 − q_ik) computed in log space (revision 2);
  0 when S is empty.
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
from harness.settings import setting
from harness.ssl import (
    MAPPINGS,
    ema_update_,
    load_tensor_state,
    mapping,
    pseudo_label_step,
    tensor_state,
)


@dataclass(frozen=True)
class DTAState:
    """DTA's running statistics: stage confidence g (0-d), class status s (C) and the number
    of batches t (0-d int64) they have seen, as stored (read them through :func:`dta_estimates`)."""

    g: Tensor
    s: Tensor
    t: Tensor

    @staticmethod
    def initial(num_classes: int, bias_correction: bool) -> DTAState:
        """Revision 2 (bias correction): g₀ = s₀ = 0. Revision 1: g₀ = s₀ = 1/C (β starts at 1)."""
        start = 0.0 if bias_correction else 1.0 / num_classes
        return DTAState(torch.tensor(start), torch.full((num_classes,), start), torch.tensor(0))

    def to(self, device: torch.device) -> DTAState:
        """The same state on ``device``."""
        return DTAState(self.g.to(device), self.s.to(device), self.t.to(device))


def dta_update(state: DTAState, probs: Tensor, momentum: float) -> DTAState:
    """The state after one batch of teacher weak-view probabilities ``probs`` (B×C)."""
    g, s = state.g.clone(), state.s.clone()
    ema_update_(g, probs.max(dim=-1).values.mean(), momentum)
    ema_update_(s, probs.mean(dim=0), momentum)
    return DTAState(g, s, state.t + 1)


def dta_estimates(state: DTAState, momentum: float, bias_correction: bool) -> tuple[Tensor, Tensor]:
    """(ĝ, ŝ): with ``bias_correction`` the stored g and s divided by 1 − m^t, as Adam reads
    its moments (so they are the weighted mean of what the teacher produced, whatever t);
    before the first batch, the uniform 1/C. Without it, g and s as stored (revision 1)."""
    if not bias_correction:
        return state.g, state.s
    t = int(state.t)
    if t == 0:
        uniform = torch.full_like(state.s, 1.0 / len(state.s))
        return uniform.mean(), uniform
    correction = 1.0 - momentum**t
    return state.g / correction, state.s / correction


def dta_thresholds(
    g: Tensor, s: Tensor, mapping_name: str, tau_min: float, tau_max: float
) -> Tensor:
    """Per-class thresholds τ_c = clamp(g · M(s_c / max s), tau_min, tau_max)."""
    beta = s / s.max()
    return (g * mapping(mapping_name)(beta)).clamp(tau_min, tau_max)


def complementary_labels(probs: Tensor, mask: Tensor, pseudo: Tensor, tau_neg: float) -> Tensor:
    """B×C boolean: (i, k) selected where sample i was rejected, p_ik < tau_neg and k ≠ ŷ_i."""
    not_pseudo = torch.ones_like(probs, dtype=torch.bool)
    not_pseudo[torch.arange(len(pseudo), device=probs.device), pseudo] = False
    return probs.lt(tau_neg) & not_pseudo & ~mask.bool().unsqueeze(1)


def log_one_minus_softmax(logits: Tensor) -> Tensor:
    """log(1 − softmax(z)) for every class (B×C), in log space:
    ``logsumexp_{j≠k} z_j − logsumexp_j z_j``.

    Revision 1's ``log(clamp(1 − softmax, 1e-7))`` in float32, measured on logits (d, 0, 0):
    off by 2e-4 at q = 0.9998 (d = 9), by 0.009 at q = 0.99999 and by 0.16 at q = 0.9999993,
    the gradient of the other classes off by up to 15%, and value and gradient gone (clamped,
    zero gradient) from q = 1 − 1e-7: exactly the confident mistakes SNL exists to correct.
    This form is exact to float32 rounding for any logits.
    """
    z = logits.float()
    c = z.shape[-1]
    eye = torch.eye(c, dtype=torch.bool, device=z.device)
    others = z.unsqueeze(-2).expand(*z.shape[:-1], c, c).masked_fill(eye, float("-inf"))
    return others.logsumexp(dim=-1) - z.logsumexp(dim=-1, keepdim=True)


def negative_loss(logits_s: Tensor, pairs: Tensor) -> Tensor:
    """−mean over the selected pairs of log(1 − q_ik), q = softmax(strong logits); 0 if none."""
    if not pairs.any():
        return logits_s.new_zeros((), dtype=torch.float32)
    rows = pairs.any(dim=1)  # only the samples with a complementary label
    return -log_one_minus_softmax(logits_s[rows])[pairs[rows]].mean()


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


@dataclass(frozen=True)
class DTASNLSettings:
    """``configs/method/dta_snl.yaml`` (the symbols of docs/methods/dta_snl.md)."""

    momentum: float = setting(key="m", low=0.0, high=1.0, high_open=True)  # m, of g and s
    bias_correction: bool = setting()  # revision 2: read g, s as g/(1−m^t), s/(1−m^t)
    mapping: str = setting(choices=tuple(MAPPINGS))  # M(β)
    tau_min: float = setting(low=0.0, high=1.0)  # lower clamp of τ_c
    tau_max: float = setting(low=0.0, high=1.0)  # upper clamp; the fixed τ when dta=false
    lambda_u: float = setting()  # weight of L_pos
    tau_neg: float = setting(low=0.0, high=1.0)  # complementary label if p_k < tau_neg
    lambda_neg: float = setting()  # weight of L_neg
    dta: bool = setting()  # dynamic thresholds (false: tau_max for every class)
    snl: bool = setting()  # selective negative learning
    local_attention: bool = setting()  # LAE in the neck
    attention_reduction: int = setting(low=1)  # LAE hidden width = max(8, channels // this)
    feature_drop_p: float = setting(low=0.0, high=1.0)  # RFD probability (0 = off)
    feature_drop_grid: int = setting(low=2)  # RFD grid side
    balanced_sampling: bool = setting()  # drives data.balanced_sampling (the config file's link)

    def __post_init__(self) -> None:
        if self.tau_min > self.tau_max:
            raise ConfigError(
                f"method.tau_min and tau_max need tau_min <= tau_max, got {self.tau_min} and "
                f"{self.tau_max}"
            )


@register_method("dta_snl", "DTA+SNL: dynamic thresholds, negative learning, local attention")
class DTASNL(Method):
    """DTA+SNL (reconstruction): EMA-teacher pseudo-labels with dynamic per-class thresholds,
    negative learning on rejected samples, and the attention + feature-dropout neck."""

    uses_unlabelled = True
    adaptive_thresholds = "dta"  # the dta=false ablation: fixed tau_max
    Settings = DTASNLSettings
    settings: DTASNLSettings

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.state = DTAState.initial(setup.num_classes, self.settings.bias_correction)

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Install the LAE + RFD neck as ``model.neck`` (after any neck already there)."""
        s = self.settings
        if not s.local_attention and s.feature_drop_p == 0:
            return model
        channels = int(model.num_features)
        hidden = max(8, channels // s.attention_reduction)
        neck = LocalAttentionDropout(
            channels, hidden, s.local_attention, s.feature_drop_p, s.feature_drop_grid
        )
        model.neck = (
            neck if isinstance(model.neck, nn.Identity) else nn.Sequential(model.neck, neck)
        )
        return model

    def estimates(self) -> tuple[Tensor, Tensor]:
        """(ĝ, ŝ): the statistics as the thresholds read them (bias-corrected in revision 2)."""
        return dta_estimates(self.state, self.settings.momentum, self.settings.bias_correction)

    def thresholds(self) -> Tensor:
        """The current per-class τ (tau_max everywhere with ``dta=false``)."""
        s = self.settings
        if not s.dta:
            return torch.full_like(self.state.s, s.tau_max)
        return dta_thresholds(*self.estimates(), s.mapping, s.tau_min, s.tau_max)

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """Update DTA, then L_sup + lambda_u·L_pos + lambda_neg·L_neg."""
        # The weak view joins the student's pass for its batch-norm statistics only (FixMatch's
        # one pass): without it the running statistics the evaluated model uses are half those
        # of strongly augmented images: 27.9% instead of 36.5% top-1 after 400 steps on synthfer
        # at 5% labels (docs/methods_experiment_from_scratch.md).
        step = pseudo_label_step(ctx, "dta_snl", self._update_thresholds, teacher=True)
        s = self.settings
        loss = step.loss(s.lambda_u)
        diagnostics = step.diagnostics(ctx.num_classes, stage_confidence=float(self.estimates()[0]))
        if s.snl:
            pairs = complementary_labels(step.probs, step.mask, step.pseudo, s.tau_neg)
            loss_neg = negative_loss(step.logits_s, pairs)
            loss = loss + s.lambda_neg * loss_neg
            n_pairs = int(pairs.sum())
            hidden = step.unlabelled.hidden_targets.view(-1, 1).to(pairs.device)
            wrong = pairs.gather(1, hidden).sum()
            diagnostics["loss_neg"] = float(loss_neg.detach())
            diagnostics["neg_pairs"] = float(n_pairs)
            diagnostics["neg_error_rate"] = float(wrong) / n_pairs if n_pairs else float("nan")
        return StepOutput(loss, diagnostics)

    def _update_thresholds(self, probs: Tensor) -> Tensor:
        """DTA's statistics updated with this batch of teacher probabilities first, then the
        thresholds they give."""
        self.state = dta_update(self.state.to(probs.device), probs, self.settings.momentum)
        return self.thresholds()

    def state_dict(self) -> dict[str, Any]:
        """g, s and the batch count t, as stored (CPU copies)."""
        return tensor_state(g=self.state.g, s=self.state.s, t=self.state.t)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the class count must match."""
        current = {"g": self.state.g, "s": self.state.s, "t": self.state.t}
        self.state = DTAState(**load_tensor_state(state, current, "dta_snl"))

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds, ĝ, ŝ and β (the statistics as the thresholds read them)."""
        g, s = self.estimates()
        return {
            "threshold": self.thresholds().cpu().tolist(),
            "stage_confidence": float(g),
            "class_status": s.cpu().tolist(),
            "beta": (s / s.max()).cpu().tolist(),
        }
