"""FreeMatch (Wang et al., ICLR 2023), as in USB's ``freematch`` (latest, 1/C initialisation).

Self-adaptive thresholding (SAT): a global τ (EMA of the mean max prob, or of its 0.8 quantile)
and a per-class p̃ (EMA of the mean prob) both start at 1/C; class c's threshold is
τ · p̃(c) / max p̃. Order within a step, as in USB: the EMA update with this batch's weak-view
probabilities comes *first*, then the mask max prob ≥ threshold[ŷ] (USB: ``.ge``).

Self-adaptive fairness (USB ``entropy_loss``, weight ``lambda_e``): on the strong views of the
masked samples, −H(SumNorm(p̃ / h̃), SumNorm(p̄ / h̄)) = Σ SumNorm(p̃/h̃) · log SumNorm(p̄/h̄),
where h̃ is the EMA histogram of weak-view pseudo-labels, p̄ the mean strong-view prob and h̄
the histogram of strong-view predictions (1/0 counted as 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.method import Method, MethodSetup, StepContext, StepOutput
from harness.registry import register_method
from harness.settings import setting
from harness.ssl import ema_update_, load_tensor_state, pseudo_label_step, tensor_state

_FIELDS = ("tau", "p_model", "label_hist")


@dataclass(frozen=True)
class SATState:
    """FreeMatch's running statistics: global τ (0-d), p̃ and the label histogram h̃ (C)."""

    tau: Tensor
    p_model: Tensor
    label_hist: Tensor

    @staticmethod
    def initial(num_classes: int) -> SATState:
        """Everything uniform: τ = 1/C, p̃ = h̃ = 1/C per class."""
        uniform = torch.full((num_classes,), 1.0 / num_classes)
        return SATState(uniform.mean(), uniform.clone(), uniform.clone())

    def to(self, device: torch.device) -> SATState:
        """The same state on ``device``."""
        return SATState(self.tau.to(device), self.p_model.to(device), self.label_hist.to(device))


def sat_update(
    state: SATState, probs: Tensor, momentum: float, use_quantile: bool, clip_thresh: bool
) -> SATState:
    """The state after one batch of weak-view probabilities ``probs`` (B×C)."""
    max_probs, pseudo = probs.max(dim=-1)
    confidence = torch.quantile(max_probs, 0.8) if use_quantile else max_probs.mean()
    tau, p_model, label_hist = state.tau.clone(), state.p_model.clone(), state.label_hist.clone()
    ema_update_(tau, confidence, momentum)
    if clip_thresh:
        tau = tau.clamp(0.0, 0.95)
    ema_update_(p_model, probs.mean(dim=0), momentum)
    hist = torch.bincount(pseudo, minlength=len(p_model)).to(label_hist.dtype)
    ema_update_(label_hist, hist / hist.sum(), momentum)
    return SATState(tau, p_model, label_hist)


def sat_thresholds(state: SATState) -> Tensor:
    """Per-class thresholds τ · p̃(c) / max p̃."""
    return state.tau * state.p_model / state.p_model.max()


def _sum_norm_scaled(values: Tensor, scale_by: Tensor) -> Tensor:
    """SumNorm(values / scale_by), with 1/0 counted as 0 (USB's ``replace_inf_to_zero``)."""
    inverse = torch.where(scale_by > 0, 1.0 / scale_by, torch.zeros_like(scale_by))
    scaled = values * inverse.detach()
    return scaled / scaled.sum()


def fairness_loss(mask: Tensor, logits_s: Tensor, state: SATState) -> Tensor:
    """USB's FreeMatch ``entropy_loss`` on the strong-view logits of the masked samples."""
    probs_s = logits_s[mask.bool()].float().softmax(dim=-1)
    hist_s = torch.bincount(probs_s.argmax(dim=-1), minlength=probs_s.shape[1]).float()
    target = _sum_norm_scaled(state.p_model, state.label_hist)
    mean_s = _sum_norm_scaled(probs_s.mean(dim=0), hist_s / hist_s.sum())
    return (target * torch.log(mean_s + 1e-12)).sum()


@dataclass(frozen=True)
class FreeMatchSettings:
    """``configs/method/freematch.yaml``."""

    ema_p: float = setting(low=0.0, high=1.0, high_open=True)  # momentum of the SAT EMAs
    lambda_u: float = setting()  # weight of the pseudo-label loss
    lambda_e: float = setting()  # weight of the fairness term
    use_quantile: bool = setting()  # τ from the 0.8 quantile of max prob instead of its mean
    clip_thresh: bool = setting()  # clip τ to [0, 0.95]


@register_method("freematch", "FreeMatch: self-adaptive thresholds and class fairness")
class FreeMatch(Method):
    """FreeMatch: SAT thresholds, pseudo-label CE and the self-adaptive fairness term."""

    uses_unlabelled = True
    adaptive_thresholds = True
    Settings = FreeMatchSettings
    settings: FreeMatchSettings

    def __init__(self, config: Mapping[str, Any], setup: MethodSetup) -> None:
        super().__init__(config, setup)
        self.sat = SATState.initial(setup.num_classes)

    def training_loss(self, ctx: StepContext) -> StepOutput:
        """Update SAT, then L_sup + lambda_u · masked CE + lambda_e · fairness."""
        step = pseudo_label_step(ctx, "freematch", self._update_thresholds)
        loss_fair = (
            fairness_loss(step.mask, step.logits_s, self.sat)
            if step.mask.any()
            else step.loss_unsup.new_zeros(())
        )
        loss = step.loss(self.settings.lambda_u) + self.settings.lambda_e * loss_fair
        return StepOutput(
            loss, step.diagnostics(ctx.num_classes, loss_extra=float(loss_fair.detach()))
        )

    def _update_thresholds(self, probs: Tensor) -> Tensor:
        """SAT updated with this batch's weak-view probabilities first (as USB), then the
        thresholds it gives."""
        s = self.settings
        self.sat = sat_update(
            self.sat.to(probs.device), probs, s.ema_p, s.use_quantile, s.clip_thresh
        )
        return sat_thresholds(self.sat)

    def state_dict(self) -> dict[str, Any]:
        """τ, p̃ and h̃ (CPU copies)."""
        return tensor_state(**{k: getattr(self.sat, k) for k in _FIELDS})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the class count must match."""
        current = {k: getattr(self.sat, k) for k in _FIELDS}
        self.sat = SATState(**load_tensor_state(state, current, "freematch"))

    def summary(self) -> dict[str, Any]:
        """Final per-class thresholds, τ, p̃ and h̃."""
        return {
            "threshold": sat_thresholds(self.sat).cpu().tolist(),
            "tau": float(self.sat.tau),
            "p_model": self.sat.p_model.cpu().tolist(),
            "label_hist": self.sat.label_hist.cpu().tolist(),
        }
