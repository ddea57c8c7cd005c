"""Kept weights: a finished run's final EMA model (and its student) in
``<results>/runs/<run_id>/weights.pt``, with what the model is.

The file is a plain dict that ``torch.load(path, weights_only=True)`` reads without any
fer-bench code: ``{"meta": {...JSON-able...}, "ema": state_dict, "student": state_dict}``.
``meta`` says how to rebuild and feed the model: backbone name and config, the method and its
config (a method may add a neck, e.g. DTA+SNL's), the classes in output order, the run's config
hash, the input size and normalisation. :func:`build_from_weights` rebuilds the network with
the harness (:func:`harness.models.build_model` + the method's ``wrap_model``) and loads it
strictly, so a file that does not fit its description is an error, not a silent partial load.

Written atomically (temporary file + fsync + rename, as the result store does): a reader sees no
file or the whole file. A forced rerun archives the previous file under ``superseded/`` before
replacing it, as the store does with the result.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.transforms import MEAN, STD
from harness.errors import BenchError
from harness.files import atomic_write
from harness.spec import RunSpec
from harness.store import RUNS_DIR, result_path, superseded_path

WEIGHTS_NAME = "weights.pt"
FORMAT = "fer-bench-weights/1"


class WeightsError(BenchError):
    """A kept-weights file is missing or is not one (the message names the file)."""


def weights_path(results_dir: Path, run_id: str) -> Path:
    """``<results_dir>/runs/<run_id>/weights.pt``."""
    return Path(results_dir) / RUNS_DIR / run_id / WEIGHTS_NAME


def model_meta(spec: RunSpec, classes: tuple[str, ...], num_unlabelled: int) -> dict[str, Any]:
    """What a kept model is, as JSON-able data: enough to rebuild it, feed it and name its
    outputs without the run's result file."""
    cfg = spec.config
    return {
        "format": FORMAT,
        "run_id": spec.run_id,
        "config_hash": spec.config_hash,
        "dataset": spec.dataset,
        "method": spec.method,
        "method_label": spec.method_label,
        "labels": spec.labels,
        "seed": spec.seed,
        "steps": int(cfg["train"]["steps"]),
        "classes": list(classes),
        "num_unlabelled": int(num_unlabelled),
        "backbone": dict(cfg["backbone"]),
        "method_config": dict(cfg["method"]),
        "architecture": "harness.models.FERNet: timm backbone -> method neck -> mean pool -> "
        "dropout -> linear",
        "input": {
            "image_size": int(cfg["data"]["image_size"]),
            "channels": "RGB",
            "layout": "B x 3 x H x W float32",
            "scale": "uint8 / 255",
            "mean": list(MEAN),
            "std": list(STD),
            "resize": "PIL bilinear (antialiased) to image_size x image_size, after the "
            "dataset's face crop",
        },
        "torch": str(torch.__version__),  # a TorchVersion would need a trusted unpickler
    }


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict on the CPU in contiguous (not channels_last) memory: loads anywhere."""
    return {key: value.detach().cpu().contiguous() for key, value in state.items()}


def save_weights(
    path: Path,
    meta: dict[str, Any],
    ema_state: dict[str, torch.Tensor],
    student_state: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """Write the weights file atomically; returns ``{"path", "bytes", "sha256"}`` for the
    result JSON (the hash lets a cross-dataset result say which weights it evaluated)."""
    payload: dict[str, Any] = {"meta": meta, "ema": _cpu_state(ema_state)}
    if student_state is not None:
        payload["student"] = _cpu_state(student_state)
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keep_weights(
    results_dir: Path,
    spec: RunSpec,
    meta: dict[str, Any],
    states: dict[str, dict[str, torch.Tensor]] | None,
) -> dict[str, Any] | None:
    """Save a finished run's weights (``states``: the ``"ema"`` and ``"student"`` state dicts;
    None with ``train.save_weights=false``) under its working folder. A file already there
    (from the result a forced rerun supersedes) is first moved to
    ``superseded/<timestamp>.weights.pt``, so the weights beside a result are always that
    result's. Returns the result's ``saved_weights`` entry."""
    path = weights_path(results_dir, spec.run_id)
    if path.exists():
        archive = superseded_path(result_path(results_dir, spec)).with_suffix(".weights.pt")
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, archive)
    if states is None:
        return None
    return save_weights(path, meta, states["ema"], states.get("student"))


def read_weights(path: Path) -> dict[str, Any]:
    """Load a weights file with ``weights_only=True`` (no code runs from the file).

    A missing file, or one that is not a fer-bench weights file, is a :class:`WeightsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no kept weights (file missing)")
    try:
        # mmap: the tensors are read when used, so reading the metadata costs no I/O.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "ema" not in payload:
        raise WeightsError(f"{path}: not a fer-bench weights file (expected format {FORMAT})")
    return payload


def build_from_weights(payload: dict[str, Any], which: str = "ema") -> nn.Module:
    """The model of a weights file (``which``: ``"ema"`` or ``"student"``), in eval mode on the
    CPU. Rebuilt as the run built it (backbone without pretrained weights, then the method's
    ``wrap_model``), loaded strictly."""
    # Imported here: the registry imports every method plugin.
    from harness.method import MethodSetup
    from harness.models import build_model
    from harness.registry import get_method

    meta = payload["meta"]
    if which not in payload:
        raise WeightsError(f"weights of run {meta['run_id']} hold no {which!r} model")
    backbone = meta["backbone"]
    num_classes = len(meta["classes"])
    model, _ = build_model(
        backbone["name"], num_classes, drop_rate=float(backbone.get("drop_rate", 0.0))
    )
    # The method's constructor only sizes its state here; its neck (if any) is what matters.
    method = get_method(meta["method"]).cls(
        dict(meta["method_config"]),
        MethodSetup(
            num_classes=num_classes,
            num_unlabelled=int(meta["num_unlabelled"]),
            labelled_targets=torch.zeros(0, dtype=torch.int64),
            total_steps=int(meta["steps"]),
        ),
    )
    model = method.wrap_model(model)
    try:
        model.load_state_dict(payload[which], strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise WeightsError(
            f"weights of run {meta['run_id']} do not fit the model they describe: {first}"
        ) from None
    return model.eval()
