"""The process's global random number generators: seeding, saving, restoring and forking.

A resumed run ends with the same metrics as an uninterrupted one only if every draw training
makes is either a pure function of the seed and position or restored from the checkpoint; the
global RNGs (dropout, model initialisation) are the second kind.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python RNGs (model initialisation draws from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG the training step may draw from (dropout, feature-map dropout, ...)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def forked_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """torch's RNGs (CPU, and ``device``'s when CUDA) restored on exit: what runs inside
    (evaluation, a method's periodic hook) never moves training's draws."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class GlobalRng:
    """The process's global RNGs as one checkpointable object (``state_dict`` /
    ``load_state_dict``), for :class:`harness.engine.TrainState`."""

    def state_dict(self) -> dict[str, Any]:
        """What :func:`rng_state` captures."""
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the RNGs (:func:`set_rng_state`)."""
        set_rng_state(state)
