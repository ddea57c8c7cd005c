"""Weights-only unpickling: tensors, plain containers and an allow-list of harmless types.

``torch.load(weights_only=True)`` refuses every global a pickle names except tensors and plain
containers, so a planted file cannot run code. Research checkpoints commonly also carry
``argparse.Namespace`` (the training arguments) and numpy scalars, dtypes and arrays (metrics,
RNG states); these only rebuild data, so they are allowed too (:func:`harmless_globals`).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

# The numpy functions that rebuild arrays and scalars; numpy 2 moved them from numpy.core to
# numpy._core, and files written under numpy 1 name the old module.
_NUMPY_REBUILDERS = ("_reconstruct", "scalar")


def harmless_globals() -> list[Any]:
    """The globals :func:`load_weights_only` allows besides torch's own (each only rebuilds
    data): ``argparse.Namespace``, numpy arrays, scalars and dtypes."""
    multiarray = getattr(np, "_core", np.core).multiarray
    allowed: list[Any] = [argparse.Namespace, np.ndarray, np.dtype]
    # The dtype classes (numpy.dtypes.Float32DType, ...) some numpy versions pickle by name.
    allowed += sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}, key=str)
    for name in _NUMPY_REBUILDERS:
        function = getattr(multiarray, name)
        allowed += [function, (function, f"numpy.core.multiarray.{name}")]
    return allowed


def load_weights_only(source: Any, map_location: Any = "cpu") -> Any:
    """``torch.load(source, weights_only=True)`` with :func:`harmless_globals` allowed; raises
    ``pickle.UnpicklingError`` naming the first other global the file asks for."""
    with torch.serialization.safe_globals(harmless_globals()):
        return torch.load(source, map_location=map_location, weights_only=True)
