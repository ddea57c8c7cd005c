"""The device a run trains on and the switches that depend on it.

``train.device=auto`` picks the first CUDA device when one is visible; ``train.amp`` and
``train.channels_last`` accept ``auto`` (on for CUDA only). The training engine, ``bench eval``
and the throughput benchmark resolve them here, so all three run a model the same way.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError


def select_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is visible on this machine")
    return device


def cuda_switch(value: Any, device: torch.device) -> bool:
    """Resolve an ``auto | true | false`` switch that defaults to on for CUDA only."""
    return device.type == "cuda" if value in ("auto", None) else bool(value)


def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device``, in channels_last memory layout when asked (as it trains)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device when ``amp``; otherwise nothing (full precision)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), e.g. before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
