"""synthfer: a procedurally rendered face-expression dataset, written in RAF-DB's layout.

Each image is a cartoon face drawn with PIL. The seven RAF-DB classes differ only in facial
geometry — mouth curve, opening and width, brow height and slant, eye opening, an asymmetric
upper-lip raise with a nose wrinkle — each drawn from a per-class distribution that overlaps its
neighbours (fear/surprise, anger/disgust, sadness/neutral). Everything else is nuisance:
identity (face shape, skin tone, feature spacing, hair), pose (rotation, shift, scale),
lighting gradient, background, noise, partial occlusion, and a share of ambiguous blends of two
expressions (labelled with the dominant one). Class frequencies follow RAF-DB's training set.

The dataset is written exactly as RAF-DB ships (``EmoLabel/list_patition_label.txt`` and
``Image/aligned/<name>_aligned.jpg``) and read back by the RAF-DB loader, so the real loader is
what every test and the quick start exercise. Generation is deterministic: image ``i`` of a split
is drawn from ``np.random.default_rng([seed, split, i])``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# RAF-DB training-set counts in label order 1..7: Surprise, Fear, Disgust, Happiness, Sadness,
# Anger, Neutral. synthfer keeps these proportions in both splits.
RAFDB_TRAIN_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)

# Expression geometry per class (mean): mouth curve (+smile / -frown), mouth opening, mouth
# width, brow height (+raised), brow slant (+inner ends up, -inner ends down), eye opening,
# lip raise (disgust's asymmetric upper lip and nose wrinkle).
GEOMETRY_KEYS = ("curve", "opening", "width", "brow_height", "brow_slant", "eyes", "lip_raise")
CLASS_GEOMETRY = np.array(
    [
        [0.05, 0.80, 0.75, 0.85, 0.15, 1.35, 0.0],  # Surprise
        [-0.25, 0.45, 1.10, 0.60, 0.65, 1.25, 0.0],  # Fear
        [-0.35, 0.15, 0.95, -0.40, -0.35, 0.65, 0.80],  # Disgust
        [0.80, 0.30, 1.15, 0.10, 0.00, 0.80, 0.0],  # Happiness
        [-0.60, 0.05, 0.85, -0.05, 0.70, 0.70, 0.0],  # Sadness
        [-0.30, 0.10, 0.80, -0.65, -0.80, 0.65, 0.10],  # Anger
        [0.00, 0.05, 0.95, 0.00, 0.00, 0.90, 0.0],  # Neutral
    ]
)
# How far one face's expression strays from its class mean (per geometry parameter).
GEOMETRY_SPREAD = np.array([0.22, 0.15, 0.12, 0.25, 0.28, 0.20, 0.22])

_SKIN = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 130],
        [198, 134, 90],
        [141, 85, 50],
        [90, 56, 37],
    ],
    dtype=np.float64,
)
_HAIR = np.array(
    [[30, 25, 20], [80, 50, 25], [150, 110, 60], [220, 190, 120], [120, 120, 120], [160, 60, 30]],
    dtype=np.float64,
)

DONE_MARKER = ".complete"


@dataclass(frozen=True)
class SynthConfig:
    """How big, how hard and which draw of synthfer to make."""

    train_size: int = 6000
    test_size: int = 1500
    image_size: int = 100  # side of the written JPEGs (RAF-DB's aligned faces are 100×100)
    seed: int = 1234
    expression_scale: float = 1.0  # multiplies GEOMETRY_SPREAD: larger → classes overlap more
    blend_share: float = 0.08  # share of faces blending two expressions (dominant one labels)
    occlusion_prob: float = 0.25  # share of faces with a random occluder over part of the face
    max_rotation: float = 15.0  # degrees, uniform in ±max
    max_shift: float = 0.08  # fraction of the image side
    scale_range: tuple[float, float] = (0.85, 1.1)
    lighting: float = 0.45  # strongest lighting gradient (multiplicative, across the image)
    noise_std: float = 10.0  # strongest Gaussian pixel noise (0-255 scale)
    jpeg_quality: int = 90

    def fingerprint(self) -> str:
        """Short hash of every setting: the cache folder name."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def split_labels(size: int, seed: int, split: str) -> np.ndarray:
    """Labels 0..6 of one split with RAF-DB's class proportions (every class present)."""
    props = np.array(RAFDB_TRAIN_COUNTS, dtype=np.float64) / sum(RAFDB_TRAIN_COUNTS)
    counts = np.maximum(1, np.floor(props * size).astype(int))
    counts[np.argmax(counts)] += size - counts.sum()  # the remainder goes to the largest class
    labels = np.repeat(np.arange(7), counts)
    return np.random.default_rng([seed, _split_id(split), 99]).permutation(labels)


def _split_id(split: str) -> int:
    return {"train": 0, "test": 1}[split]


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 24) -> list[tuple[float, float]]:
    """Points of a parabola from (x0, y) to (x1, y) whose middle is displaced by ``bend``."""
    xs = np.linspace(x0, x1, n)
    t = (xs - x0) / max(x1 - x0, 1e-6) * 2 - 1
    return [(float(x), float(y + bend * (1 - tt * tt))) for x, tt in zip(xs, t, strict=True)]


def render_face(geometry: np.ndarray, rng: np.random.Generator, config: SynthConfig) -> Image.Image:
    """Draw one face with the given expression geometry and random identity and nuisances."""
    curve, opening, width, brow_h, brow_slant, eyes, lip_raise = geometry
    side = config.image_size * 3  # draw large, downsample: anti-aliasing for free
    u = side / 100  # drawing unit: 1% of the canvas
    background = rng.uniform(40, 215, 3)
    canvas = Image.new("RGB", (side, side), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(canvas)

    # Identity.
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.08) + rng.normal(0, 8, 3)
    skin_rgb = tuple(int(c) for c in np.clip(skin, 0, 255))
    hair = tuple(
        int(c) for c in np.clip(_HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 10, 3), 0, 255)
    )
    face_w, face_h = rng.uniform(30, 38) * u, rng.uniform(40, 47) * u
    cx, cy = 50 * u, 52 * u
    eye_dx, eye_y = rng.uniform(12, 16) * u, cy - rng.uniform(6, 11) * u
    mouth_y = cy + rng.uniform(18, 24) * u
    dark = tuple(int(c * 0.35) for c in skin_rgb)

    if rng.random() < 0.8:  # hair behind the head
        draw.ellipse(
            [cx - face_w - 3 * u, cy - face_h - 5 * u, cx + face_w + 3 * u, cy + 5 * u], fill=hair
        )
    draw.ellipse([cx - face_w, cy - face_h, cx + face_w, cy + face_h], fill=skin_rgb)
    if rng.random() < 0.6:  # fringe
        draw.chord([cx - face_w, cy - face_h, cx + face_w, cy - face_h * 0.2], 180, 360, fill=hair)

    # Eyes: opening scales the eye height; pupils.
    eye_w = rng.uniform(5, 6.5) * u
    eye_h = max(0.6 * u, eyes * rng.uniform(2.6, 3.2) * u)
    for sign in (-1, 1):
        ex = cx + sign * eye_dx
        draw.ellipse(
            [ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h],
            fill=(250, 250, 250),
            outline=dark,
            width=max(1, int(0.6 * u)),
        )
        pr = min(eye_h, 2.4 * u)
        draw.ellipse([ex - pr, eye_y - pr, ex + pr, eye_y + pr], fill=(35, 25, 20))

    # Brows: height above the eye and slant of the inner end.
    brow_len = rng.uniform(8, 10) * u
    brow_y = eye_y - eye_h - (4 + 4 * brow_h) * u
    thickness = max(2, int(rng.uniform(1.6, 2.4) * u))
    for sign in (-1, 1):
        inner_x = cx + sign * (eye_dx - brow_len * 0.55)
        outer_x = cx + sign * (eye_dx + brow_len * 0.55)
        inner_y = brow_y - brow_slant * 4 * u
        outer_y = brow_y + brow_slant * 1.5 * u
        draw.line(
            [(inner_x, inner_y), (outer_x, outer_y)],
            fill=hair if rng.random() < 0.5 else dark,
            width=thickness,
        )

    # Nose, and disgust's wrinkle.
    draw.line(
        [(cx, eye_y + 3 * u), (cx - 2 * u, cy + 10 * u), (cx + 1.5 * u, cy + 11 * u)],
        fill=dark,
        width=max(1, int(0.8 * u)),
    )
    if lip_raise > 0.35:
        for k in range(2):
            y = eye_y + (6 + 2.5 * k) * u
            draw.line(
                [(cx - 3 * u, y), (cx + 3 * u, y - 1 * u)], fill=dark, width=max(1, int(0.6 * u))
            )

    # Mouth: upper and lower lip curves; curve bends both, opening separates them, lip raise
    # lifts one corner of the upper lip.
    half = max(5.0, 11 * width) * u
    bend = curve * 4 * u  # image y grows downwards: a smile pushes the middle down
    upper = _curve(cx - half, cx + half, mouth_y, bend * 0.6)
    lower = _curve(cx - half, cx + half, mouth_y, bend * 0.6 + opening * 11 * u)
    if lip_raise > 0:
        upper = [(x, y - lip_raise * 3 * u * max(0.0, (x - cx) / half)) for x, y in upper]
    # Corners move opposite to the middle, which is what reads as a smile or a frown.
    lift = curve * 3 * u
    upper = [(x, y - lift * ((x - cx) / half) ** 2) for x, y in upper]
    lower = [(x, y - lift * ((x - cx) / half) ** 2) for x, y in lower]
    lip = tuple(int(c) for c in np.clip(np.array(skin_rgb) * [0.75, 0.45, 0.45], 0, 255))
    if opening > 0.12:
        draw.polygon(upper + lower[::-1], fill=(60, 20, 25), outline=lip)
        draw.line(upper, fill=lip, width=max(2, int(1.5 * u)))
        draw.line(lower, fill=lip, width=max(2, int(1.5 * u)))
    else:
        draw.line(upper, fill=lip, width=max(2, int(2.0 * u)))

    # Occluder (a hand, a mask, a phone...): a random rectangle or ellipse over part of the face.
    if rng.random() < config.occlusion_prob:
        ow, oh = rng.uniform(15, 35) * u, rng.uniform(10, 25) * u
        ox, oy = cx + rng.uniform(-25, 25) * u, cy + rng.uniform(-20, 28) * u
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        box = [ox - ow / 2, oy - oh / 2, ox + ow / 2, oy + oh / 2]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)

    # Pose: rotate, scale and shift about the centre.
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    scale = rng.uniform(*config.scale_range)
    shift = rng.uniform(-config.max_shift, config.max_shift, 2) * side
    canvas = _affine(canvas, angle, scale, shift, tuple(int(c) for c in background))
    image = canvas.resize((config.image_size, config.image_size), Image.Resampling.LANCZOS)

    # Lighting gradient and sensor noise.
    pixels = np.asarray(image, dtype=np.float64)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, config.image_size)
    gx, gy = np.meshgrid(ramp, ramp)
    gradient = (
        1 + rng.uniform(0, config.lighting) * (gx * math.cos(theta) + gy * math.sin(theta)) * 2
    )
    pixels = pixels * gradient[..., None] * rng.uniform(0.8, 1.15)
    pixels += rng.normal(0, rng.uniform(0, config.noise_std), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _affine(
    image: Image.Image, angle: float, scale: float, shift: np.ndarray, fill: tuple
) -> Image.Image:
    """Rotate by ``angle`` degrees and scale about the centre, then shift (pixels)."""
    side = image.size[0]
    c = side / 2
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    # PIL maps output → input: x_in = cos*(x-c-sx) + sin*(y-c-sy) + c, and likewise for y.
    sx, sy = shift
    coeffs = (
        cos,
        sin,
        c - cos * (c + sx) - sin * (c + sy),
        -sin,
        cos,
        c + sin * (c + sx) - cos * (c + sy),
    )
    return image.transform(
        image.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill
    )


def face_geometry(label: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """The expression parameters of one face of class ``label`` (maybe a blend)."""
    geometry = CLASS_GEOMETRY[label].copy()
    if rng.random() < config.blend_share:
        other = (label + rng.integers(1, 7)) % 7
        weight = rng.uniform(0.55, 0.75)  # the labelled expression stays dominant
        geometry = weight * geometry + (1 - weight) * CLASS_GEOMETRY[other]
    return geometry + rng.normal(0, 1, len(geometry)) * GEOMETRY_SPREAD * config.expression_scale


def _render_one(args: tuple[SynthConfig, str, int, int, str]) -> None:
    config, split, index, label, path = args
    rng = np.random.default_rng([config.seed, _split_id(split), index])
    image = render_face(face_geometry(label, rng, config), rng, config)
    image.save(path, quality=config.jpeg_quality)


def generate_synthfer(root: Path, config: SynthConfig, workers: int = 2) -> None:
    """Write synthfer at ``root`` in RAF-DB's official layout."""
    image_dir = root / "Image" / "aligned"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    lines, jobs = [], []
    for split, size in (("train", config.train_size), ("test", config.test_size)):
        digits = max(5, len(str(size)))
        for i, label in enumerate(split_labels(size, config.seed, split)):
            name = f"{split}_{i + 1:0{digits}d}"
            lines.append(f"{name}.jpg {label + 1}\n")
            jobs.append((config, split, i, int(label), str(image_dir / f"{name}_aligned.jpg")))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_render_one, jobs, chunksize=64))
    else:
        for job in jobs:
            _render_one(job)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(lines))
    (root / "synthfer.json").write_text(json.dumps(asdict(config), indent=1) + "\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthfer(cache_dir: Path, config: SynthConfig, workers: int = 2) -> Path:
    """synthfer's root under ``cache_dir``, generated on first use.

    Safe when several processes ask at once: one generates into a temporary folder and renames
    it into place under a file lock; the others wait and reuse it. A folder without the
    completion marker (a killed generation) is never used.
    """
    root = Path(cache_dir) / f"synthfer-{config.fingerprint()}"
    if (root / DONE_MARKER).exists():
        return root
    with _locked(root.with_name(root.name + ".lock")):
        if (root / DONE_MARKER).exists():
            return root
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_synthfer(tmp, config, workers=workers)
        (tmp / DONE_MARKER).write_text("ok\n")
        shutil.rmtree(root, ignore_errors=True)  # an unfinished folder from a killed run
        os.replace(tmp, root)
    return root
