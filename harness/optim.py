"""The optimiser and its learning-rate schedule, built from the ``optim`` and ``sched`` config."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; no weight decay on biases and norm parameters (as in FixMatch)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    name = cfg["name"].lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"]
        )
    if name in ("adam", "adamw"):
        opt = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return opt(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]))
    raise ConfigError(f"optim.name={cfg['name']!r}: choose sgd, adam or adamw")


def cosine_with_warmup(
    warmup_steps: int, total_steps: int, num_cycles: float
) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then ``cos(pi * num_cycles * progress)``.

    ``num_cycles=7/16`` is FixMatch's ``cos(7πk/16K)``; ``0.5`` decays to zero.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, math.cos(math.pi * num_cycles * progress))

    return factor


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The ``sched`` config's warm-up + cosine schedule over ``total_steps`` steps."""
    factor = cosine_with_warmup(int(cfg["warmup_steps"]), total_steps, float(cfg["num_cycles"]))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
