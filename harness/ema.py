"""The EMA of the student that the engine evaluates and that teacher-based methods learn from.

A plain EMA with decay d keeps weight d^t on the model it started from, so a short schedule
would evaluate a model still largely its random start. Hence the warm-up, on by default
(``ema.warmup``): timm's :class:`~timm.utils.ModelEmaV3` with ``use_warmup=True``, whose decay
after ``s`` updates is ``min(decay, 1 - (1 + s)^-warmup_power)`` (``warmup_gamma`` = 1), power
2/3 by default (docs/ema.md: why, and what it costs). The decay is a pure function of the step,
which the checkpoint holds, so a resumed run continues the same schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and timm are imported by the functions that build an EMA, so that
    # planning a grid (which states the horizon warning) imports neither
    from timm.utils import ModelEmaV3
    from torch import nn

# The EMA should average the student over at most this share of the run's steps; above it the
# evaluated model lags the student by a large part of the training (a warning says so).
FAIR_SHARE = 0.1


def build_ema(model: nn.Module, ema_cfg: Mapping[str, Any]) -> ModelEmaV3:
    """An EMA copy of ``model`` with ``ema.decay`` and, if ``ema.warmup``, the warm-up above.

    The engine calls ``ema.update(model, step=step)`` with the 0-based index of the step just
    taken: timm copies the student outright at steps 0 and 1 (with or without warm-up), then
    uses ``min(decay, 1 - step^-warmup_power)``.
    """
    from timm.utils import ModelEmaV3

    return ModelEmaV3(
        model,
        decay=float(ema_cfg["decay"]),
        use_warmup=bool(ema_cfg["warmup"]),
        warmup_gamma=1.0,
        warmup_power=float(ema_cfg["warmup_power"]),
    )


def ema_horizon(decay: float) -> float:
    """The number of steps an EMA of this decay averages over, 1/(1 - decay)."""
    return float("inf") if decay >= 1.0 else 1.0 / (1.0 - decay)


def ema_horizon_warning(ema_cfg: Mapping[str, Any], total_steps: int) -> str | None:
    """A warning when the horizon of ``ema.decay`` is more than :data:`FAIR_SHARE` of
    ``total_steps``, naming the keys to change; None when it is not."""
    decay = float(ema_cfg["decay"])
    horizon = ema_horizon(decay)
    if horizon <= FAIR_SHARE * total_steps:
        return None
    suggestion = 1.0 - 1.0 / max(FAIR_SHARE * total_steps, 1.0)
    message = (
        f"ema.decay={decay:g} averages the student over ~{horizon:.0f} steps, more than "
        f"{FAIR_SHARE:.0%} of train.steps={total_steps}: the evaluated EMA model (and the "
        "teacher of teacher-based methods) can lag far behind the student. Set "
        f"ema.decay<={max(suggestion, 0.0):.4g} or raise train.steps."
    )
    if ema_cfg["warmup"]:
        final = decay_at(ema_cfg, total_steps - 1)
        message += f" (With ema.warmup the decay reached by the last step is {final:.4g}.)"
    else:
        message += (
            f" With ema.warmup=false the final model keeps weight {decay:g}^{total_steps - 2} = "
            f"{decay ** max(total_steps - 2, 0):.2f} on the student of step 1: set "
            "ema.warmup=true."
        )
    return message


def decay_at(ema_cfg: Mapping[str, Any], step: int) -> float:
    """The decay :func:`build_ema`'s EMA applies at the 0-based ``step`` (timm's
    ``ModelEmaV3.get_decay``, restated without torch for planning; tests/test_ema.py holds the
    two equal): 0 at steps 0 and 1 (a copy), then ``ema.decay``, or with ``ema.warmup``
    ``min(decay, 1 - step^-warmup_power)``."""
    updates = max(0, step - 1)
    if updates <= 0:
        return 0.0
    decay = float(ema_cfg["decay"])
    if not ema_cfg["warmup"]:
        return decay
    return max(min(1 - (1 + updates) ** -float(ema_cfg["warmup_power"]), decay), 0.0)


def build_decay_probe(ema_cfg: Mapping[str, Any]) -> ModelEmaV3:
    """An EMA of a one-weight model: only its :meth:`get_decay` schedule is of use. Built under
    a forked RNG: initialising the weight must not move the global RNG."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        return build_ema(nn.Linear(1, 1), ema_cfg)
