"""synthfaces: a synthetic face-recognition set for pretraining, drawn by synthfer's renderer.

The FER papers this harness reproduces start from a backbone trained on face recognition
(MS-Celeb-1M), whose people are not RAF-DB's. synthfaces does the same with no download: many
identities (synthfer's identity draws: face shape, skin tone, feature placement, hair, ears,
glasses, moustache), many images of each, with every expression, pose, background, lighting and
occluder varying from image to image, and labelled by identity only.

Seeds: identity ``k`` is drawn from ``default_rng([seed, IDENTITY_STREAM, k, 0])`` and its image
``j`` from ``default_rng([seed, IDENTITY_STREAM, k, 1 + j])``. synthfer's images use
``[seed, 0 | 1, i]`` (train | test), so with any seeds the two sets draw from disjoint seed
sequences: no person of the pretraining set is a person of the FER set, as MS-Celeb's are not
RAF-DB's.

Written as a class-folder dataset (``train/<identity>/*.jpg`` and, for held-out images of the
same people, ``test/<identity>/*.jpg``), so the generic folder loader and the decoded-image
cache read it like any other dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.data.folder import load_class_folders
from harness.data.synthfer import (
    GENERATOR_VERSION,
    SynthConfig,
    _default_workers,
    check_numbers,
    face_geometry,
    render_face,
)
from harness.data.table import FERDataset
from harness.errors import ConfigError
from harness.files import generate_once
from harness.interrupts import ctrl_c_held

# The seed-sequence element that separates identity draws from synthfer's splits (0, 1).
IDENTITY_STREAM = 2
SPLITS = ("train", "test")  # test: held-out images of the training identities
# The renderer's sizes and seed, which rendering faces does not use: fixed at these values
# (never the synthfer config's) because they enter every pretraining's cache key.
RENDER_UNUSED = {"train_size": 6000, "test_size": 1500, "image_size": 100, "seed": 1234}


@dataclass(frozen=True)
class FaceSetConfig:
    """Which people, how many images of each, and the renderer's nuisance settings.

    Every field enters the cache key. The sizes and the seed come from the config
    (``pretrain.faces`` in configs/pretrain/*.yaml; no default here). ``render`` holds
    synthfer's settings (pose, lighting, occlusion, ...) with their own defaults; its sizes and
    seed are not used here (:data:`RENDER_UNUSED`).
    """

    identities: int
    train_per_identity: int
    heldout_per_identity: int
    image_size: int  # side of the written JPEGs
    seed: int
    render: SynthConfig = field(default_factory=lambda: SynthConfig(**RENDER_UNUSED))

    def __post_init__(self) -> None:
        check_numbers(self, "pretrain.faces")
        if isinstance(self.render, dict):  # from YAML
            try:
                render = SynthConfig(**{**RENDER_UNUSED, **self.render})
                object.__setattr__(self, "render", render)
            except TypeError as err:
                raise ConfigError(f"pretrain.faces.render: {err}") from None
        problems = []
        if self.identities < 2:
            problems.append(f"identities must be ≥ 2, got {self.identities}")
        if self.train_per_identity < 1 or self.heldout_per_identity < 1:
            problems.append("train_per_identity and heldout_per_identity must be ≥ 1")
        if self.image_size < 16:
            problems.append(f"image_size must be ≥ 16, got {self.image_size}")
        if problems:
            raise ConfigError("pretrain.faces: " + "; ".join(problems))

    def settings(self) -> dict:
        """Every setting as plain data, with the renderer's version (what the key hashes)."""
        return {**asdict(self), "generator_version": GENERATOR_VERSION}

    def fingerprint(self) -> str:
        """Short hash of every setting and the renderer version: the cache folder name."""
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def identity_name(k: int, count: int) -> str:
    """Folder name of identity ``k``: ``id_00042`` (zero-padded, so folders sort by number)."""
    return f"id_{k:0{max(5, len(str(count - 1)))}d}"


def render_identity_image(config: FaceSetConfig, identity: int, image: int) -> bytes:
    """JPEG bytes of image ``image`` of person ``identity``: the same person in every image,
    a fresh expression (any of the seven, uniformly), pose, background, lighting, occluder."""
    render = SynthConfig(**{**asdict(config.render), "image_size": config.image_size})
    who = np.random.default_rng([config.seed, IDENTITY_STREAM, identity, 0])
    rng = np.random.default_rng([config.seed, IDENTITY_STREAM, identity, 1 + image])
    expression = int(rng.integers(7))
    picture = render_face(face_geometry(expression, rng, render), rng, render, identity_rng=who)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=render.jpeg_quality)
    return buffer.getvalue()


def _write_one(args: tuple[FaceSetConfig, int, int, str]) -> None:
    config, identity, image, path = args
    Path(path).write_bytes(render_identity_image(config, identity, image))


def generate_faces(root: Path, config: FaceSetConfig, workers: int | None = None) -> None:
    """Write the set at ``root``: ``train/<id>/NN.jpg`` then held-out ``test/<id>/NN.jpg``
    (image numbers continue across the two, so no held-out image repeats a training one)."""
    jobs = []
    for k in range(config.identities):
        name = identity_name(k, config.identities)
        counts = (config.train_per_identity, config.heldout_per_identity)
        first = 0
        for split, count in zip(SPLITS, counts, strict=True):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(first, first + count):
                jobs.append((config, k, j, str(folder / f"{j:03d}.jpg")))
            first += count
    workers = _default_workers() if workers is None else workers
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            with ctrl_c_held():  # map submits every chunk at once: the processes start here
                written = pool.map(_write_one, jobs, chunksize=64)
            list(written)
    else:
        for job in jobs:
            _write_one(job)
    (Path(root) / "synthfaces.json").write_text(json.dumps(config.settings(), indent=1) + "\n")


def ensure_faces(cache_dir: Path, config: FaceSetConfig, workers: int | None = None) -> Path:
    """The set's root, ``cache_dir/synthfaces-<fingerprint>``, generated once on first use
    (several processes asking at once generate it once: :func:`harness.files.generate_once`)."""
    root = Path(cache_dir).expanduser() / f"synthfaces-{config.fingerprint()}"
    return generate_once(
        root,
        lambda tmp: generate_faces(tmp, config, workers=workers),
        json.dumps(config.settings(), sort_keys=True),
        "synthfaces",
    )


def load_faces(cache_dir: Path, config: FaceSetConfig, workers: int | None = None) -> FERDataset:
    """The set as a dataset whose classes are identities (generated first if needed)."""
    root = ensure_faces(cache_dir, config, workers)
    return load_class_folders(root, name=f"synthfaces-{config.fingerprint()}")
