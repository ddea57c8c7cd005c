"""Face-recognition pretraining: the run's backbone trained once on synthfaces' identities,
cached by a key, and loaded by every run that names the same pretraining.

The FER papers start from a backbone pretrained on MS-Celeb-1M; ``+pretrain=synth_faces`` does
the same on synthfaces (:mod:`harness.data.synthfaces`). The weights land in
``<cache_dir>/pretrain/<name>-<backbone>-<key>.pth`` with a ``.meta.json`` sidecar (size,
SHA-256, the pretraining's own figures), so any user can also pass the file as
``backbone.weights=...``, the path MS-Celeb weights take. The key hashes every pretraining
setting, the synthfaces renderer version and the backbone name; a run records it in its config
(``pretrain.key``, so a different pretraining is a different run id) and in its provenance.

Training is the engine's own loop (:func:`harness.engine.fit` with the supervised method, the
identities as classes and the held-out images as the test set), so it resumes from its
checkpoint like any run. This module imports torch only inside the functions that train, so
planning a grid stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.synthfaces import FaceSetConfig, load_faces
from harness.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

# Bump when training changes what the same settings produce: it is part of the key.
PRETRAIN_VERSION = 1
FORMAT = "fer-bench pretrained backbone"
# The engine's EMA only gives the log's and sidecar's EMA figure (the student is stored); its
# decay 1 - EMA_HORIZON_DIVISOR / steps averages over about the last steps / EMA_HORIZON_DIVISOR
# steps (the last tenth): at a fixed 0.999 it still held 60% of the random initialisation after
# 500 of 1500 steps (held-out top-1 0.6% as the loss fell).
EMA_HORIZON_DIVISOR = 10


@dataclass(frozen=True)
class PretrainSettings:
    """One ``pretrain:`` block (configs/pretrain/*.yaml), every field checked."""

    name: str
    faces: FaceSetConfig
    image_size: int
    batch_size: int
    steps: int
    eval_every: int
    seed: int
    optim: dict[str, Any]
    sched: dict[str, Any]

    @classmethod
    def from_config(cls, block: dict[str, Any]) -> PretrainSettings:
        """Read a ``pretrain:`` block; unknown or missing keys are a :class:`ConfigError`."""
        data = {k: v for k, v in block.items() if k != "key"}  # a pinned block reads back
        faces = {k: v for k, v in data.get("faces", {}).items() if k != "generator_version"}
        try:
            settings = cls(**{**data, "faces": FaceSetConfig(**faces)})
        except TypeError as err:
            known = ", ".join(cls.__dataclass_fields__)
            raise ConfigError(f"pretrain: {err}; its settings: {known}") from None
        if min(settings.image_size, settings.batch_size, settings.steps, settings.eval_every) < 1:
            raise ConfigError("pretrain: image_size, batch_size, steps, eval_every must be ≥ 1")
        return settings

    def as_config(self) -> dict[str, Any]:
        """Every setting as plain data (defaults included), as pinned into a run's config."""
        return {**asdict(self), "faces": self.faces.settings()}


def pretrain_key(settings: PretrainSettings, backbone: str) -> str:
    """12 hex digits of SHA-256 over every setting, the renderer version and the backbone."""
    blob = {"settings": settings.as_config(), "backbone": backbone, "version": PRETRAIN_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def pin_pretrain(config: dict[str, Any]) -> dict[str, Any]:
    """Write the pretraining's full settings and its key into a run config that names one
    (``+pretrain=...``); a config without ``pretrain`` is returned unchanged, so the ids of
    runs from scratch do not move."""
    block = config.get("pretrain")
    if block is None:
        return config
    if config["backbone"].get("weights"):
        raise ConfigError(
            "backbone.weights and pretrain are both set: a run starts from one of them "
            "(drop +pretrain=..., or backbone.weights=null)"
        )
    settings = PretrainSettings.from_config(block)
    backbone = str(config["backbone"]["name"])
    config["pretrain"] = {**settings.as_config(), "key": pretrain_key(settings, backbone)}
    return config


def weights_file(cache: Path, settings: PretrainSettings, backbone: str) -> Path:
    """Where the pretrained backbone of these settings lives in the cache."""
    name = f"{settings.name}-{backbone}-{pretrain_key(settings, backbone)}.pth"
    return Path(cache) / "pretrain" / name


@dataclass(frozen=True)
class Pretrained:
    """A pretrained backbone on disk and its sidecar's metadata; ``built`` says whether this
    call trained it (False: reused from the cache)."""

    path: Path
    metadata: dict[str, Any]
    built: bool

    def provenance(self) -> dict[str, Any]:
        """What a run's provenance records about the weights it started from."""
        keys = ("key", "backbone", "sha256", "identity_top1", "train_seconds", "created")
        return {"path": str(self.path), **{k: self.metadata.get(k) for k in keys}}


def ensure_pretrained(
    config: dict[str, Any],
    console: Console,
    show_progress: bool = True,
) -> Pretrained:
    """The pretrained backbone a run config names, trained on first use and reused after.

    Several processes asking at once train it once (the cache's build lock). A cached file
    whose bytes do not match its sidecar (truncated, overwritten) is reported and rebuilt.
    """
    from harness.data.cache import build_lock
    from harness.data.datasets import cache_dir
    from harness.weights import checksum_problem, read_sidecar

    config = pin_pretrain(dict(config))
    settings = PretrainSettings.from_config(config["pretrain"])
    backbone = str(config["backbone"]["name"])
    path = weights_file(cache_dir(config["data"]), settings, backbone)

    def cached() -> dict[str, Any] | None:
        record = read_sidecar(path)
        if record is None or not path.is_file():
            return None  # never finished (the sidecar is written last)
        problem = checksum_problem(path)
        if problem:
            console.log(f"[yellow]{problem}: training it again[/]")
            return None
        return record

    record = cached()
    if record is not None:
        return Pretrained(path, record, built=False)
    with build_lock(path, progress=show_progress):
        record = cached()  # another process may have built it while this one waited
        if record is not None:
            return Pretrained(path, record, built=False)
        record = _train_and_save(config, settings, path, console, show_progress)
    return Pretrained(path, record, built=True)


def _train_and_save(
    config: dict[str, Any],
    settings: PretrainSettings,
    path: Path,
    console: Console,
    show_progress: bool,
) -> dict[str, Any]:
    """Train the backbone on identity classification and save it with its figures."""
    from harness.data.datasets import cache_dir
    from harness.weights import read_sidecar, save_weights

    started = datetime.now(timezone.utc)
    data_start = time.perf_counter()
    faces = load_faces(cache_dir(config["data"]), settings.faces)
    data_seconds = time.perf_counter() - data_start
    console.log(
        f"pretraining {config['backbone']['name']} on {faces.name}: {faces.num_classes} "
        f"identities, {len(faces.train)} images, {len(faces.test)} held out"
    )
    state, outcome = _fit_identities(config, settings, faces, path, console, show_progress)
    metadata = {
        "format": FORMAT,
        "key": config["pretrain"]["key"],
        "backbone": config["backbone"]["name"],
        "settings": config["pretrain"],
        "identities": faces.num_classes,
        "train_images": len(faces.train),
        "heldout_images": len(faces.test),
        # The stored weights are the student's; the EMA teacher's figure is beside it.
        "identity_top1": outcome.student_metrics["top1"],
        "identity_top1_ema": outcome.metrics["top1"],
        "train_seconds": round(outcome.train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "steps": outcome.steps,
        "device": outcome.device,
        "threads": outcome.threads,
        "created": started.isoformat(timespec="seconds"),
    }
    save_weights(state, path, metadata)
    console.log(
        f"pretrained {path.name}: identity top-1 {metadata['identity_top1']:.2f}% on "
        f"{len(faces.test)} held-out images, {metadata['train_seconds']:.0f} s"
    )
    return read_sidecar(path) or metadata


def _fit_identities(
    config: dict[str, Any],
    settings: PretrainSettings,
    faces: Any,
    path: Path,
    console: Console,
    show_progress: bool,
) -> tuple[dict[str, Any], Any]:
    """Supervised identity classification with the engine's loop; returns the student
    backbone's state_dict and the engine's FitResult."""
    import numpy as np

    from harness.data.datasets import split_images
    from harness.engine import TrainData, build_method, fit
    from harness.models import build_model
    from harness.rng import seed_everything

    fit_config = _fit_config(config, settings)
    train_images = split_images(faces.train, "train", faces, fit_config)
    heldout_images = split_images(faces.test, "test", faces, fit_config)
    data = TrainData(
        train_images=train_images,
        train_targets=faces.train.labels,
        labelled=np.arange(len(faces.train)),
        unlabelled=np.arange(0),
        test_images=heldout_images,
        test_targets=faces.test.labels,
        class_names=faces.classes,
    )
    seed_everything(settings.seed)
    model, _ = build_model(str(config["backbone"]["name"]), faces.num_classes)
    method = build_method("supervised", fit_config, data)
    work_dir = path.with_name(f".{path.stem}.run")  # checkpoints: an interrupted build resumes
    outcome = fit(
        fit_config,
        model,
        method,
        data,
        work_dir,
        run_hash=config["pretrain"]["key"],
        console=console,
        show_progress=show_progress,
    )
    state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    (work_dir / "checkpoint.pt").unlink(missing_ok=True)
    return state, outcome


def _fit_config(config: dict[str, Any], settings: PretrainSettings) -> dict[str, Any]:
    """The engine config of the pretraining: the run's machine settings (device, threads,
    workers, cache) with the pretraining's data, schedule and optimiser."""
    from harness.registry import method_settings

    train = {
        **config["train"],
        "steps": settings.steps,
        "eval_every": settings.eval_every,
        "compile": False,
    }
    data = {
        **config["data"],
        "image_size": settings.image_size,
        "batch_size": settings.batch_size,
        "balanced_sampling": False,
    }
    return {
        **config,
        "seed": settings.seed,
        "train": train,
        "data": data,
        "optim": dict(settings.optim),
        "sched": dict(settings.sched),
        "ema": {
            **config["ema"],
            "decay": 1 - EMA_HORIZON_DIVISOR / max(settings.steps, 2 * EMA_HORIZON_DIVISOR),
        },
        "method": method_settings("supervised"),
    }


def pretrain_command(
    name: str, overrides: list[str], console: Console, show_progress: bool = True
) -> Pretrained:
    """``bench pretrain``: compose the root config with ``+pretrain=<name>`` and the overrides
    (as ``bench run`` would for a run that names it), build or reuse the weights, and say
    where they are and what they score."""
    from harness.config import compose_config, group_options

    if name not in group_options("pretrain"):
        raise ConfigError(
            f"unknown pretraining {name!r}; available: {', '.join(group_options('pretrain'))}"
        )
    config = pin_pretrain(compose_config([f"+pretrain={name}", *overrides]))
    pretrained = ensure_pretrained(config, console, show_progress)
    meta = pretrained.metadata
    state = "trained now" if pretrained.built else "reused from the cache (not retrained)"
    console.print(
        f"pretraining {name} (key {meta['key']}), {meta['backbone']}: {state}\n"
        f"  identity top-1 {meta['identity_top1']:.2f}% on {meta['heldout_images']} held-out "
        f"images of {meta['identities']} identities\n"
        f"  training {meta['train_seconds']:.0f} s, {meta['steps']} steps on {meta['device']}"
        f" with {meta['threads']} threads; data {meta['data_seconds']:.0f} s\n"
        f"  weights {pretrained.path}\n"
        f"use it: bench run ... +pretrain={name} (same overrides), "
        f"or backbone.weights={pretrained.path}",
        highlight=False,
        soft_wrap=True,
    )
    return pretrained
