"""The checkpoint: what a run resumes from, written so that no fault loses it or runs code.

- :class:`TrainState` is the one mapping of everything a run resumes from, strict about its
  keys (Lightning Fabric's ``state``).
- :func:`save_checkpoint` writes it atomically (:func:`harness.files.atomic_write`) with a
  SHA-256 of its bytes in its header, and keeps the checkpoint it replaces as
  ``<name>.previous.pt``: a kill at any moment leaves a whole checkpoint behind.
- :func:`resume` loads it with ``torch.load(weights_only=True)``, which unpickles tensors and
  plain containers only: a checkpoint planted in a shared results folder cannot run code. Every
  value is stored in such types (numpy arrays and scalars, e.g. numpy's RNG state, as tensors
  and numbers, converted back on load). A truncated or corrupt checkpoint is detected by its
  checksum and the previous one is used; when neither is whole the run restarts from step 0
  with a warning (never a crash loop on requeue), keeping the damaged files for inspection.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from harness.errors import BenchError, ConfigError
from harness.files import fsync_dir, write_temp
from harness.safe_load import load_weights_only

# File layout: MAGIC, the SHA-256 of the rest (32 bytes), then a torch.save zip archive.
MAGIC = b"fer-bench-ckpt/2"
DIGEST_BYTES = 32
PREVIOUS_SUFFIX = ".previous.pt"
DAMAGED_SUFFIX = ".damaged"
# Tags of numpy values stored as tensors and numbers (weights-only loading refuses numpy).
NDARRAY_TAG = "__numpy_array__"
NPSCALAR_TAG = "__numpy_scalar__"


class CheckpointWriteError(BenchError):
    """A checkpoint could not be written (full disk, no permission); the last one is kept."""


class DamagedCheckpoint(Exception):
    """A checkpoint file that is truncated, corrupt or not a checkpoint (message says why)."""


def previous_path(path: Path) -> Path:
    """Where the checkpoint replaced by the last save is kept: ``checkpoint.previous.pt``."""
    return path.with_name(path.stem + PREVIOUS_SUFFIX)


def _stateful(value: Any) -> bool:
    return hasattr(value, "state_dict") and hasattr(value, "load_state_dict")


class StatefulGroup:
    """Named stateful objects (the streams) as one checkpointable object, with strict names."""

    def __init__(self, members: dict[str, Any]) -> None:
        self.members = members

    def state_dict(self) -> dict[str, Any]:
        """Each member's state under its name."""
        return {name: member.state_dict() for name, member in self.members.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every member; refuses a state that names other members."""
        if set(state) != set(self.members):
            raise ConfigError(
                f"the checkpoint holds streams {sorted(state)}, this run has {sorted(self.members)}"
            )
        for name, member in self.members.items():
            member.load_state_dict(state[name])


class TrainState(dict):
    """Everything a checkpoint holds, each under its one key (Lightning Fabric's ``state``).

    Values are either stateful objects (``state_dict`` / ``load_state_dict``: the model,
    optimiser, streams, ...), saved as their state, or plain values (step, counters), saved
    as they are and replaced on load. The checkpoint file is the flat dict of those keys, so
    checkpoints of earlier versions (same keys) load unchanged; a file with a missing or an
    extra key is refused by name rather than resumed half-way.
    """

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content: each value's ``state_dict()``, or the value itself."""
        return {k: v.state_dict() if _stateful(v) else v for k, v in self.items()}

    def load_state_dict(self, saved: dict[str, Any], source: Path) -> None:
        """Restore every key from ``saved`` (read from ``source``); strict on keys."""
        missing, extra = sorted(set(self) - set(saved)), sorted(set(saved) - set(self))
        if missing or extra:
            problems = [
                f"{what} keys {keys}"
                for what, keys in (("missing", missing), ("unknown", extra))
                if keys
            ]
            raise ConfigError(
                f"{source} does not match this engine's checkpoint ({', '.join(problems)}); "
                "delete it to start over"
            )
        for key, value in self.items():
            if _stateful(value):
                value.load_state_dict(saved[key])
            else:
                self[key] = saved[key]

    def save(self, path: Path) -> None:
        """Write the checkpoint (:func:`save_checkpoint`)."""
        save_checkpoint(self.state_dict(), path)


def to_safe(value: Any) -> Any:
    """``value`` with every numpy array and scalar replaced by a tagged tensor or number, so
    that ``torch.load(weights_only=True)`` reads it back (:func:`from_safe` undoes it)."""
    if isinstance(value, np.ndarray):
        wide = value.astype(np.int64) if value.dtype.kind == "u" else value
        return {NDARRAY_TAG: torch.from_numpy(np.ascontiguousarray(wide)), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return {NPSCALAR_TAG: value.item(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {key: to_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_safe(item) for item in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def from_safe(value: Any) -> Any:
    """Undo :func:`to_safe`."""
    if isinstance(value, dict):
        if NDARRAY_TAG in value:
            return value[NDARRAY_TAG].numpy().astype(np.dtype(value["dtype"]))
        if NPSCALAR_TAG in value:
            return np.dtype(value["dtype"]).type(value[NPSCALAR_TAG])
        return {key: from_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [from_safe(item) for item in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


class _Hashing:
    """A write-only file that hashes what passes through it (torch.save needs only write).
    Remembers a failed write: torch.save reports it as a RuntimeError of its own."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest = handle, hashlib.sha256()
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _write(content: dict[str, Any], handle: BinaryIO, sink: list[_Hashing]) -> None:
    handle.write(MAGIC + bytes(DIGEST_BYTES))
    hashing = _Hashing(handle)
    sink.append(hashing)
    torch.save(to_safe(content), hashing)
    handle.seek(len(MAGIC))
    handle.write(hashing.digest.digest())
    handle.seek(0, os.SEEK_END)


def save_checkpoint(content: dict[str, Any], path: Path) -> None:
    """Write ``content`` to ``path`` atomically, with its checksum; the file it replaces is
    kept as :func:`previous_path`. A failed write (full disk) raises
    :class:`CheckpointWriteError` and leaves both earlier files as they were."""
    path = Path(path)
    writers: list[_Hashing] = []
    try:
        tmp = write_temp(path.parent, path.name, lambda handle: _write(content, handle, writers))
    except (OSError, RuntimeError) as failure:
        err = writers[0].error if writers and writers[0].error else failure
        if not isinstance(err, OSError):
            raise
        raise CheckpointWriteError(
            f"cannot write checkpoint {path} ({err.strerror or err}); the last checkpoint is "
            "kept: free space and rerun to resume from it"
        ) from None
    try:
        if path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The content of the checkpoint at ``path``, checked against its checksum and loaded
    weights-only (no code in the file runs). :class:`DamagedCheckpoint` says what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DamagedCheckpoint(f"unreadable ({err.strerror or err})") from None
    if data.startswith(MAGIC):
        start = len(MAGIC) + DIGEST_BYTES
        digest, payload = data[len(MAGIC) : start], data[start:]
        if hashlib.sha256(payload).digest() != digest:
            raise DamagedCheckpoint("its checksum does not match (truncated or corrupt)")
    else:  # written before checkpoints had a header (no checksum to check)
        payload = data
    try:
        saved = load_weights_only(io.BytesIO(payload), map_location=device)
    except Exception as err:  # an UnpicklingError names the refused type: a planted file
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise DamagedCheckpoint(
            f"not a checkpoint weights-only loading accepts ({type(err).__name__}: {first})"
        ) from None
    if not isinstance(saved, dict):
        raise DamagedCheckpoint(f"holds a {type(saved).__name__}, not a checkpoint")
    return from_safe(saved)


def resume(
    state: TrainState, path: Path, device: torch.device, warn: Callable[[str], None]
) -> bool:
    """Load the newest whole checkpoint (``path``, else its previous) into ``state``; False
    when there is none to resume from.

    A damaged file is named through ``warn`` and moved aside (``.damaged-<time>``), so a
    requeued job does not trip over it again; with no whole checkpoint left the run restarts
    from step 0. A whole checkpoint of another config is a :class:`ConfigError`.
    """
    damaged_any = False
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            saved = read_checkpoint(candidate, device)
        except DamagedCheckpoint as damaged:
            kept, damaged_any = _set_aside(candidate), True
            warn(f"checkpoint {candidate} is damaged: {damaged}; kept as {kept.name}")
            continue
        if saved.get("config_hash") != state["config_hash"]:
            raise ConfigError(f"{candidate} belongs to a different config; delete it to start over")
        state.load_state_dict(saved, source=candidate)
        if candidate != path:
            warn(f"resuming from the previous checkpoint {candidate} (step {state['step']})")
        return True
    if damaged_any:
        warn("no whole checkpoint is left: the run restarts from step 0")
    return False


def _set_aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{stamp}")
    os.replace(path, target)
    return target
