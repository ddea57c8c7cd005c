"""Load a local checkpoint into a backbone, tolerating the usual checkpoint shapes, and say
exactly what was loaded.

Nothing here downloads: the harness never assumes a machine can reach a model hub, so pretrained
weights always come from a file the user names with ``backbone.weights=/path/to/file``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError
from harness.files import atomic_write, atomic_write_text
from harness.safe_load import load_weights_only

# A weights file written by :func:`save_weights` has its checksum in this sidecar file.
SIDECAR_SUFFIX = ".meta.json"
HASH_CHUNK = 2**20

# Keys under which training scripts nest the model's state_dict, most specific first.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Prefixes that wrappers add to parameter names: DataParallel/DDP, Lightning modules, an
# encoder/backbone attribute of a larger model, MoCo's query encoder.
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "encoder_q.", "net.")
EXPECTED = (
    "backbone.weights must point to a local checkpoint file (.pth/.pt/.safetensors) holding the "
    "backbone's state_dict (bare, or under 'state_dict' / 'model' / 'model_state_dict' / 'net')"
)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_backbone_weights` did, tensor by tensor (names as in the model, except
    ``unexpected`` which keeps the file's names)."""

    path: str
    loaded: tuple[str, ...]
    skipped_shape: tuple[str, ...]  # present in file, shape differs (e.g. a 1000-class head)
    unexpected: tuple[str, ...]  # in file, not in the model (e.g. fc.* when num_classes=0)
    missing: tuple[str, ...]  # in the model, not in the file

    def summary(self) -> str:
        """One or two human lines for the log: counts, plus examples of anything not loaded."""
        total = len(self.loaded) + len(self.missing) + len(self.skipped_shape)
        line = f"weights {self.path}: loaded {len(self.loaded)}/{total} backbone tensors"
        notes = [
            f"{label} {len(names)} ({_examples(names)})"
            for label, names in (
                ("missing", self.missing),
                ("shape-mismatch skipped", self.skipped_shape),
                ("ignored from file", self.unexpected),
            )
            if names
        ]
        return line if not notes else f"{line}\n  " + "; ".join(notes)


def load_backbone_weights(
    backbone: nn.Module, path: str | Path, *, trust: bool = False
) -> LoadReport:
    """Copy the matching tensors of the checkpoint at ``path`` into ``backbone`` (in place).

    A tensor matches a model entry when its name does, after stripping wrapper prefixes
    (``module.``, ``backbone.``, ``encoder.``, ...), and its shape does too; everything else is
    reported, not loaded. Raises :class:`ConfigError` when the file is missing, is not a
    checkpoint, or when not a single tensor matches (a silent no-op load would go unnoticed).
    The file is unpickled weights-only (tensors, containers, the harmless types of
    :mod:`harness.safe_load`); one that needs more is refused unless ``trust``
    (``backbone.trust_weights_file``), since unpickling it could run code stored in it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"{path} {what}: {EXPECTED}.")
    problem = checksum_problem(path)
    if problem:  # only files with a sidecar (bench pretrain's) can be checked
        raise ConfigError(problem)
    state = _tensors(_read_checkpoint(path, trust), path)
    model_state = backbone.state_dict()

    matched: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    unexpected: list[str] = []
    for file_key, tensor in state.items():
        key = _model_key(file_key, model_state)
        if key is None:
            unexpected.append(file_key)
        elif tuple(tensor.shape) != tuple(model_state[key].shape):
            skipped.append(key)
        else:
            matched[key] = tensor

    if not matched:
        raise ConfigError(
            f"{path}: no tensor in this checkpoint matches the backbone "
            f"({type(backbone).__name__}) by name and shape, so nothing would be loaded. "
            f"File keys look like {_examples(list(state), 4)}; the model expects "
            f"{_examples(list(model_state), 4)}. Is it a checkpoint of the same architecture?"
        )
    backbone.load_state_dict(matched, strict=False)  # casts dtype (e.g. fp16 files) on copy
    missing = [
        key
        for key in model_state
        # Old torchvision files lack BN step counters; they do not affect the forward pass.
        if key not in matched and key not in skipped and not key.endswith("num_batches_tracked")
    ]
    return LoadReport(
        path=str(path),
        loaded=tuple(matched),
        skipped_shape=tuple(skipped),
        unexpected=tuple(unexpected),
        missing=tuple(missing),
    )


def _read_checkpoint(path: Path, trust: bool) -> Any:
    """The deserialised file: safetensors by suffix, else torch.load weights-only with the
    harmless types of :mod:`harness.safe_load`; fully unpickled only when ``trust``."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(
                f"{path} is not a readable safetensors file ({_brief(err)}). {EXPECTED}."
            ) from err
    try:
        return load_weights_only(path)
    except pickle.UnpicklingError as err:
        refused = err
    except Exception as err:  # zip/EOF/format errors all mean "not a torch checkpoint"
        raise ConfigError(
            f"{path} is not a PyTorch checkpoint ({_brief(err)}). {EXPECTED}."
        ) from err
    asked = re.search(r"GLOBAL ([\w.]+)", str(refused))
    if not trust and asked is None:  # not a pickle of objects at all (a text file, ...)
        raise ConfigError(f"{path} is not a PyTorch checkpoint ({_brief(refused)}). {EXPECTED}.")
    if not trust:
        raise ConfigError(
            f"{path} holds Python objects that weights-only loading refuses (it asks for "
            f"{asked[1]}); unpickling it could run code stored in it, so it is not loaded. If "
            "you trust this file, set backbone.trust_weights_file=true, or re-save its tensors "
            "with torch.save(state_dict) or safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(
            f"{path} is not a PyTorch checkpoint ({_brief(refused)}). {EXPECTED}."
        ) from err
    warnings.warn(
        f"{path} was loaded with full unpickling (backbone.trust_weights_file=true).",
        stacklevel=3,
    )
    return state


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The flat name → tensor mapping inside a checkpoint, unwrapping container keys."""
    while isinstance(obj, Mapping):
        inner = next(
            (obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None
        )
        if inner is None:
            break
        obj = inner
    if isinstance(obj, nn.Module):  # a whole pickled model
        obj = obj.state_dict()
    tensors = (
        {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if isinstance(obj, Mapping)
        else {}
    )
    if not tensors:
        found = (
            f"a dict with keys {_examples([str(k) for k in obj], 6)}"
            if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}"
        )
        raise ConfigError(f"{path} holds {found} but no tensors. {EXPECTED}.")
    return tensors


def _model_key(file_key: str, model_state: Mapping[str, torch.Tensor]) -> str | None:
    """The model entry a file key names: the key itself, or the key with wrapper prefixes
    stripped one at a time (``module.backbone.layer1...`` → ``backbone.layer1...`` →
    ``layer1...``); ``None`` when no form of it is in the model."""
    key = file_key
    while True:
        if key in model_state:
            return key
        prefix = next((p for p in STRIP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return None
        key = key[len(prefix) :]


def _brief(err: BaseException) -> str:
    """An exception as one short line (torch.load's messages run to paragraphs)."""
    text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _examples(names: list[str] | tuple[str, ...], limit: int = 3) -> str:
    """A short, readable sample of a list of names: ``a, b, c, ... (+12 more)``."""
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


def sidecar(path: Path) -> Path:
    """The metadata file beside a weights file: ``x.pth`` → ``x.pth.meta.json``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(state: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, Any]) -> None:
    """Write ``state`` (under ``state_dict``) to ``path`` and ``metadata`` plus the file's size
    and SHA-256 to its sidecar, each atomically (temporary file, fsync, rename).

    The sidecar is written last, so it doubles as the completion marker: a weights file without
    one, or whose bytes no longer match it (truncated, overwritten), is caught by
    :func:`checksum_problem` before anything reads it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = sidecar(path)
    meta_path.unlink(missing_ok=True)  # the old marker must not vouch for the new bytes
    atomic_write(path, lambda handle: torch.save({"state_dict": dict(state)}, handle))
    record = {**metadata, "file": path.name, "bytes": path.stat().st_size}
    record["sha256"] = file_sha256(path)
    atomic_write_text(meta_path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's metadata of a weights file, or None when it has none or it is unreadable."""
    try:
        record = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def checksum_problem(path: Path) -> str | None:
    """One line naming ``path`` and what is wrong with it when its sidecar exists and its bytes
    do not match the recorded size and SHA-256; None when they match or there is no sidecar."""
    meta_path = sidecar(path)
    if not meta_path.exists():
        return None
    record = read_sidecar(path)
    if record is None or not {"bytes", "sha256"} <= record.keys():
        return f"{meta_path} is unreadable: cannot check {path}; delete both to rebuild"
    size = path.stat().st_size if path.exists() else None
    if size != record["bytes"]:
        return (
            f"{path} is corrupt: {size} bytes, its {SIDECAR_SUFFIX} records {record['bytes']} "
            "(truncated or overwritten)"
        )
    if file_sha256(path) != record["sha256"]:
        return f"{path} is corrupt: its SHA-256 differs from the one in its {SIDECAR_SUFFIX}"
    return None
