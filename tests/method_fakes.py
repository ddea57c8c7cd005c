"""Stand-ins shared by the method tests: tiny models, a `MethodSetup`, batches and configs.

A plain module (tests/ is on sys.path under pytest's default import mode):
``from method_fakes import ...``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from harness.method import LabelledBatch, MethodSetup, UnlabelledBatch

METHOD_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"


class LogitsNet(nn.Module):
    """Stand-in FERNet whose inputs are the logits (times a learnable scale of 1), which are
    also the embedding."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.neck = nn.Identity()
        self.num_features = num_classes

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = x * self.scale
        return out, out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_embedding(x)[0]


class TinyNet(nn.Module):
    """Stand-in FERNet: conv, neck, global pooling, linear head."""

    def __init__(self, num_classes: int = 3, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.neck = nn.Identity()
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.neck(self.conv(x)).mean(dim=(2, 3))
        return self.head(pooled), pooled

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_embedding(x)[0]


def setup(
    num_classes: int = 3,
    num_unlabelled: int = 8,
    total_steps: int = 10,
    labelled_targets: Tensor | None = None,
) -> MethodSetup:
    """A `MethodSetup`; the labelled targets default to ``[0, 1, 2]``."""
    if labelled_targets is None:
        labelled_targets = torch.tensor([0, 1, 2])
    return MethodSetup(num_classes, num_unlabelled, labelled_targets, total_steps=total_steps)


def tiny_batches(first_index: int = 0) -> tuple[LabelledBatch, UnlabelledBatch]:
    """Random 8x8 batches for a smoke step on `TinyNet`: 4 labelled, 8 unlabelled images.

    Draws from torch's global RNG in a fixed order (labelled, weak, strong, hidden targets).
    """
    labelled = LabelledBatch(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    unlabelled = UnlabelledBatch(
        torch.randn(8, 3, 8, 8),
        torch.randn(8, 3, 8, 8),
        torch.arange(first_index, first_index + 8),
        torch.randint(0, 3, (8,)),
    )
    return labelled, unlabelled


def ce(row: list[float] | Tensor, target: int) -> float:
    """Plain cross-entropy of one row of logits, by the formula."""
    values = row.tolist() if isinstance(row, Tensor) else row
    return math.log(sum(math.exp(v) for v in values)) - values[target]


def method_config(name: str) -> tuple[str, dict[str, Any]]:
    """configs/method/<name>.yaml: its text and its ``method`` block."""
    text = (METHOD_CONFIGS / f"{name}.yaml").read_text()
    return text, yaml.safe_load(text)["method"]


def full_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The method's complete config (its configs/method/<name>.yaml block) with ``overrides``:
    methods read every key strictly, so a test states only what it changes."""
    unknown = set(overrides) - set(method_config(name)[1])
    if unknown:
        raise KeyError(f"{name} has no setting {sorted(unknown)}")
    return {**method_config(name)[1], **overrides}
