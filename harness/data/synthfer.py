"""synthfer: a procedurally rendered face-expression dataset, written in RAF-DB's layout.

Each image is a cartoon face drawn with PIL. The seven RAF-DB classes differ only in facial
geometry — mouth curve, opening and width, brow height and slant, eye opening, an asymmetric
upper-lip raise with a nose wrinkle — each drawn from a per-class distribution that overlaps its
neighbours (fear/surprise, anger/disgust, sadness/neutral). Everything else is nuisance:
identity (face shape, skin tone, feature spacing, hair, ears, glasses, moustache), pose
(rotation, shift, scale), background clutter, lighting, colour cast, blur, noise, partial
occlusion, and a share of ambiguous blends of two expressions (labelled with the dominant one).
Class frequencies follow RAF-DB's training set in both splits.

The dataset is written exactly as RAF-DB ships (``EmoLabel/list_patition_label.txt`` and
``Image/aligned/<name>_aligned.jpg``) and read back by the RAF-DB loader, so the real loader is
what every test and the quick start exercise. Generation is deterministic: image ``i`` of a split
is drawn from ``np.random.default_rng([seed, split, i])``, so images can be rendered in any order
by any number of processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from harness.errors import ConfigError
from harness.files import generate_once
from harness.interrupts import ctrl_c_held
from harness.progress import counted

# RAF-DB training-set counts in label order 1..7: Surprise, Fear, Disgust, Happiness, Sadness,
# Anger, Neutral. synthfer keeps these proportions in both splits.
RAFDB_TRAIN_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)

# Expression geometry per class (mean): mouth curve (+smile / -frown), mouth opening, mouth
# width, brow height (+raised), brow slant (+inner ends up, -inner ends down), eye opening,
# lip raise (disgust's one-sided upper-lip raise; above LIP_WRINKLE the nose wrinkles too).
GEOMETRY_KEYS = ("curve", "opening", "width", "brow_height", "brow_slant", "eyes", "lip_raise")
CLASS_GEOMETRY = np.array(
    [
        [0.05, 0.80, 0.75, 0.85, 0.15, 1.35, 0.00],  # Surprise
        [-0.25, 0.45, 1.10, 0.60, 0.65, 1.25, 0.00],  # Fear
        [-0.35, 0.15, 0.95, -0.40, -0.35, 0.65, 0.80],  # Disgust
        [0.80, 0.30, 1.15, 0.10, 0.00, 0.80, 0.00],  # Happiness
        [-0.60, 0.05, 0.85, -0.05, 0.70, 0.70, 0.00],  # Sadness
        [-0.30, 0.10, 0.80, -0.65, -0.80, 0.65, 0.10],  # Anger
        [0.00, 0.05, 0.95, 0.00, 0.00, 0.90, 0.00],  # Neutral
    ]
)
NEUTRAL = 6
# How far one face's expression strays from its class mean (per geometry parameter, 1 sd).
GEOMETRY_SPREAD = np.array([0.22, 0.15, 0.12, 0.25, 0.28, 0.20, 0.22])
LIP_WRINKLE = 0.35

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
_IRIS = np.array([[70, 45, 25], [40, 90, 140], [60, 110, 60], [110, 80, 40]], dtype=np.float64)

# Bump when the renderer changes what a config draws: it is part of the cache key, so a cache
# written by an older renderer is never mistaken for the current one.
GENERATOR_VERSION = 2
SUPERSAMPLE = 3  # draw at 3× and box-downsample: anti-aliasing at almost no cost
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: RAF-DB's own spelling
IMAGE_DIR = Path("Image") / "aligned"


@dataclass(frozen=True)
class SynthConfig:
    """How big, how hard and which draw of synthfer to make (every field enters the cache key).

    The sizes and the seed come from the config (``dataset.generate`` in
    configs/dataset/synthfer.yaml; no default here); the renderer's settings after them have
    their one default here and may be overridden there.
    """

    train_size: int
    test_size: int
    image_size: int  # side of the written JPEGs (RAF-DB's aligned faces are 100×100)
    seed: int
    expression_strength: float = 1.0  # scales class means' distance from neutral: <1 subtler
    expression_spread: float = 0.8  # scales GEOMETRY_SPREAD: larger → classes overlap more (0.8:
    # calibrated so that 10% of the labels scores ~18 points below 100% with a small CNN)
    blend_share: float = 0.05  # share of faces blending two expressions (dominant one labels)
    occlusion_prob: float = 0.25  # share of faces with an occluder (hand, card, blob) on them
    accessory_prob: float = 0.15  # chance of glasses, and separately of a moustache
    clutter: float = 3.0  # mean number of random shapes in the background
    max_rotation: float = 15.0  # in-plane head rotation, degrees, uniform in ±max
    max_shift: float = 0.08  # face-centre shift, fraction of the image side, uniform in ±max
    scale_range: tuple[float, float] = (0.85, 1.1)  # face size, relative to the frame
    lighting: float = 0.45  # strongest lighting gradient: brightness up to ±this at the edges
    blur_prob: float = 0.3  # share of images slightly out of focus (Gaussian blur)
    grey_prob: float = 0.05  # share of greyscale photos (RAF-DB has some), still saved as RGB
    noise_std: float = 10.0  # strongest Gaussian pixel noise (0-255 scale); per image U(0, max)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        check_numbers(self, "synthfer (dataset.generate)")
        # YAML gives lists; a tuple keeps the config hashable and its fingerprint stable.
        object.__setattr__(self, "scale_range", tuple(float(s) for s in self.scale_range))
        problems = []
        if self.train_size < 7 or self.test_size < 7:
            problems.append("train_size and test_size must be ≥ 7 (one image per class)")
        if self.image_size < 16:
            problems.append(f"image_size must be ≥ 16, got {self.image_size}")
        for name in ("blend_share", "occlusion_prob", "accessory_prob", "blur_prob", "grey_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        low, high = self.scale_range if len(self.scale_range) == 2 else (0, -1)
        if not 0 < low <= high:
            problems.append(
                f"scale_range must be [low, high] with 0 < low ≤ high, got {list(self.scale_range)}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be 1-100, got {self.jpeg_quality}")
        if problems:
            raise ConfigError("synthfer (dataset.generate): " + "; ".join(problems))

    def fingerprint(self) -> str:
        """Short hash of every setting and the renderer version: the cache folder name."""
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def check_numbers(config: object, where: str) -> None:
    """A ConfigError naming the first ``int`` or ``float`` field of the dataclass ``config``
    that holds something else (``train_size=abc`` from the command line), before any range
    check compares it with a number; an ``int`` passes for a ``float``."""
    for item in fields(config):  # type: ignore[arg-type]
        value, kind = getattr(config, item.name), item.type
        wanted = {"int": (int,), "float": (int, float)}.get(str(kind), ())
        if wanted and (isinstance(value, bool) or not isinstance(value, wanted)):
            noun = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{where}: {item.name} must be {noun}, got {value!r}")


def split_labels(size: int, seed: int, split: str) -> np.ndarray:
    """Labels 0..6 of one split with RAF-DB's class proportions (every class present)."""
    props = np.array(RAFDB_TRAIN_COUNTS, dtype=np.float64) / sum(RAFDB_TRAIN_COUNTS)
    counts = np.maximum(1, np.round(props * size).astype(int))
    counts[np.argmax(counts)] += size - counts.sum()  # rounding slack goes to the largest class
    labels = np.repeat(np.arange(7), counts)
    return np.random.default_rng([seed, _split_id(split), 99]).permutation(labels)


def split_names(split: str, size: int) -> list[str]:
    """RAF-DB's image stems of one split: ``train_00001`` …, wider when 5 digits do not suffice."""
    digits = max(5, len(str(size)))
    return [f"{split}_{i:0{digits}d}" for i in range(1, size + 1)]


def _split_id(split: str) -> int:
    return {"train": 0, "test": 1}[split]


def face_geometry(label: int, rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """The expression parameters (GEOMETRY_KEYS) of one face of class ``label``, maybe a blend."""
    means = CLASS_GEOMETRY[NEUTRAL] + config.expression_strength * (
        CLASS_GEOMETRY - CLASS_GEOMETRY[NEUTRAL]
    )
    geometry = means[label].copy()
    if rng.random() < config.blend_share:
        other = (label + rng.integers(1, 7)) % 7
        weight = rng.uniform(0.55, 0.7)  # the labelled expression stays dominant
        geometry = weight * geometry + (1 - weight) * means[other]
    noise = rng.standard_normal(len(geometry)) * GEOMETRY_SPREAD * config.expression_spread
    return geometry + noise


# ---- drawing -------------------------------------------------------------------------------
# Faces are laid out in "face units": a 100×100 frame with the head near (50, 50). Every point
# goes through the pose before it is drawn, so rotation and scale cost nothing extra (no raster
# warp), and every ellipse is a polygon so that it can rotate.


@dataclass(frozen=True)
class _Pose:
    """Face units → canvas pixels: rotate and scale about the frame centre, then shift."""

    cos: float
    sin: float
    scale: float
    dx: float
    dy: float
    px: float  # canvas pixels per face unit

    def __call__(self, points: np.ndarray) -> list[tuple[float, float]]:
        p = np.asarray(points, dtype=np.float64) - 50.0
        x = (self.cos * p[:, 0] - self.sin * p[:, 1]) * self.scale + 50.0 + self.dx
        y = (self.sin * p[:, 0] + self.cos * p[:, 1]) * self.scale + 50.0 + self.dy
        return list(zip((x * self.px).tolist(), (y * self.px).tolist(), strict=True))

    def width(self, units: float) -> int:
        """A stroke width in canvas pixels."""
        return max(1, round(units * self.scale * self.px))


@cache
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


@cache
def _unit_span(n: int) -> np.ndarray:
    return np.linspace(-1, 1, n)


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 28) -> np.ndarray:
    """``n`` points around an axis-aligned ellipse, clockwise on screen from its right end."""
    return _unit_circle(n) * (a, b) + (cx, cy)


def _parabola(x0: float, x1: float, y: float, bend: float, n: int = 14) -> np.ndarray:
    """From (x0, y) to (x1, y) with the middle displaced by ``bend`` (down when positive)."""
    t = _unit_span(n)
    return np.stack([(x0 + x1) / 2 + t * (x1 - x0) / 2, y + bend * (1 - t * t)], axis=1)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = np.clip(colour, 0, 255).astype(int).tolist()
    return r, g, b


def _background(
    draw: ImageDraw.ImageDraw, side: int, rng: np.random.Generator, clutter: float
) -> None:
    """About ``clutter`` random rectangles, ellipses and lines (Poisson-many)."""
    for _ in range(rng.poisson(clutter)):
        x, y = rng.uniform(-0.1, 1.1, 2) * side
        w, h = rng.uniform(0.05, 0.4, 2) * side
        box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        colour = _rgb(rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.line([(box[0], box[1]), (box[2], box[3])], fill=colour, width=int(w / 8) + 1)


# Stroke width (face units) of the nose, its wrinkles and the smile lines.
_CREASE_WIDTH = 0.8


@dataclass(frozen=True)
class _Identity:
    """The identity draws every feature depends on: colours, head shape, feature placement."""

    skin: np.ndarray
    hair: np.ndarray
    cx: float
    cy: float
    face_a: float  # head half-width
    face_b: float  # head half-height
    chin: float  # stretches the lower half of the head
    eye_dx: float  # each eye's distance from the midline
    eye_y: float
    mouth_y: float

    @property
    def skin_rgb(self) -> tuple[int, int, int]:
        return _rgb(self.skin)

    @property
    def hair_rgb(self) -> tuple[int, int, int]:
        return _rgb(self.hair)

    @property
    def dark(self) -> tuple[int, int, int]:
        """Outlines and creases: a dark shade of the skin."""
        return _rgb(self.skin * 0.35)


def _sample_identity(who: np.random.Generator) -> _Identity:
    """The first identity draws (the rest come as each feature is drawn)."""
    skin = _SKIN[who.integers(len(_SKIN))] * who.uniform(0.9, 1.08) + who.normal(0, 8, 3)
    hair = _HAIR[who.integers(len(_HAIR))] + who.normal(0, 10, 3)
    cx, cy = 50.0, 50.0 + who.uniform(-2, 2)
    face_a, face_b = who.uniform(28, 36), who.uniform(38, 46)
    chin = who.uniform(0.85, 1.08)
    eye_dx, eye_y = who.uniform(11, 15), cy - who.uniform(5, 10)
    mouth_y = cy + who.uniform(17, 23)
    return _Identity(skin, hair, cx, cy, face_a, face_b, chin, eye_dx, eye_y, mouth_y)


def _draw_scene(
    rng: np.random.Generator, config: SynthConfig
) -> tuple[Image.Image, ImageDraw.ImageDraw, _Pose]:
    """The supersampled canvas with its background and clutter, and the head's pose."""
    side = config.image_size * SUPERSAMPLE
    background = rng.uniform(30, 225, 3)
    canvas = Image.new("RGB", (side, side), _rgb(background))
    draw = ImageDraw.Draw(canvas)
    _background(draw, side, rng, config.clutter)
    angle = math.radians(rng.uniform(-config.max_rotation, config.max_rotation))
    shift = rng.uniform(-config.max_shift, config.max_shift, 2) * 100
    pose = _Pose(
        math.cos(angle), math.sin(angle), rng.uniform(*config.scale_range), *shift, side / 100
    )
    return canvas, draw, pose


def _draw_body(
    draw: ImageDraw.ImageDraw, pose: _Pose, face: _Identity, rng: np.random.Generator
) -> None:
    """Shoulders (the clothes' colour is from ``rng``, not the identity) and neck."""
    cx, cy, face_a, face_b = face.cx, face.cy, face.face_a, face.face_b
    draw.polygon(
        pose(
            np.array(
                [
                    [cx - 60, 112],
                    [cx - 35, cy + face_b * 0.95],
                    [cx + 35, cy + face_b * 0.95],
                    [cx + 60, 112],
                ]
            )
        ),
        fill=_rgb(rng.uniform(0, 255, 3)),
    )
    draw.polygon(
        pose(
            np.array(
                [
                    [cx - face_a * 0.45, cy],
                    [cx + face_a * 0.45, cy],
                    [cx + face_a * 0.5, cy + face_b * 1.1],
                    [cx - face_a * 0.5, cy + face_b * 1.1],
                ]
            )
        ),
        fill=_rgb(face.skin * 0.85),
    )


def _draw_long_hair_and_ears(
    draw: ImageDraw.ImageDraw, pose: _Pose, face: _Identity, who: np.random.Generator
) -> None:
    """Whatever of the identity shows behind the head: maybe long hair, maybe ears."""
    cx, cy, face_a, face_b = face.cx, face.cy, face.face_a, face.face_b
    if who.random() < 0.35:
        long_hair = _ellipse(cx, cy - 2, face_a + 6, face_b + 6)
        long_hair[:, 1] = np.where(long_hair[:, 1] > cy, cy + face_b * 0.9, long_hair[:, 1])
        draw.polygon(pose(long_hair), fill=face.hair_rgb)
    if who.random() < 0.7:
        for sign in (-1, 1):
            draw.polygon(
                pose(_ellipse(cx + sign * face_a * 0.97, face.eye_y + 4, 3.5, 6.5, 16)),
                fill=_rgb(face.skin * 0.92),
            )


def _draw_head(
    draw: ImageDraw.ImageDraw, pose: _Pose, face: _Identity, who: np.random.Generator
) -> None:
    """The head, hair on top of it and blush."""
    cx, cy = face.cx, face.cy
    head = _ellipse(cx, cy, face.face_a, face.face_b, 40)
    head[:, 1] = np.where(head[:, 1] > cy, cy + (head[:, 1] - cy) * face.chin, head[:, 1])
    draw.polygon(pose(head), fill=face.skin_rgb)
    if who.random() < 0.85:  # hair on top, down to a slanted hairline
        hairline = cy - face.face_b * who.uniform(0.35, 0.7)
        tilt = who.uniform(-0.25, 0.25)
        top = _ellipse(cx, cy, face.face_a + 1.5, face.face_b + 2.5, 40)
        top[:, 1] = np.minimum(top[:, 1], hairline + tilt * (top[:, 0] - cx))
        draw.polygon(pose(top), fill=face.hair_rgb)
    if who.random() < 0.3:  # blush
        for sign in (-1, 1):
            draw.polygon(
                pose(_ellipse(cx + sign * (face.eye_dx + 2), face.mouth_y - 9, 5, 3.5, 16)),
                fill=_rgb(face.skin * [1.0, 0.85, 0.85]),
            )


def _draw_eyes(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    who: np.random.Generator,
    rng: np.random.Generator,
    eyes: float,
) -> tuple[float, float]:
    """Both eyes (``eyes`` scales their height; the gaze is from ``rng``): (width, height)."""
    eye_y, dark = face.eye_y, face.dark
    eye_w = who.uniform(4.5, 6.0)
    eye_h = max(0.4, eye_w * 0.55 * eyes)
    iris = _rgb(_IRIS[who.integers(len(_IRIS))])
    gaze = rng.uniform(-1.5, 1.5)
    for sign in (-1, 1):
        ex = face.cx + sign * face.eye_dx
        draw.polygon(
            pose(_ellipse(ex, eye_y, eye_w, eye_h, 20)),
            fill=(245, 245, 240),
            outline=dark,
            width=pose.width(0.5),
        )
        r = min(eye_h * 0.95, eye_w * 0.55)
        draw.polygon(pose(_ellipse(ex + gaze, eye_y, r, r, 14)), fill=iris)
        draw.polygon(pose(_ellipse(ex + gaze, eye_y, r * 0.5, r * 0.5, 10)), fill=(20, 15, 15))
        draw.line(
            pose(_ellipse(ex, eye_y, eye_w, eye_h, 20)[10:]), fill=dark, width=pose.width(0.9)
        )  # the upper lid: the top half of the outline
    return eye_w, eye_h


def _draw_brows(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    who: np.random.Generator,
    eye_h: float,
    height: float,
    slant: float,
) -> None:
    """Brows: ``height`` above the eye, ``slant`` of the inner end, a little arch."""
    cx, eye_dx = face.cx, face.eye_dx
    brow_len, arch = who.uniform(9, 12), who.uniform(0, 1.5)
    brow_y = face.eye_y - eye_h - 3.5 - 3.5 * height
    brow_colour = face.hair_rgb if who.random() < 0.5 else face.dark
    for sign in (-1, 1):
        inner_x = cx + sign * (eye_dx - brow_len * 0.5)
        outer_x = cx + sign * (eye_dx + brow_len * 0.5)
        inner_y, outer_y = brow_y - slant * 3.5, brow_y + slant * 1.2
        points = np.array(
            [
                [inner_x, inner_y],
                [(inner_x + outer_x) / 2, (inner_y + outer_y) / 2 - arch],
                [outer_x, outer_y],
            ]
        )
        draw.line(
            pose(points), fill=brow_colour, width=pose.width(who.uniform(1.4, 2.4)), joint="curve"
        )


def _draw_nose(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    who: np.random.Generator,
    lip_raise: float,
) -> None:
    """The nose, and disgust's wrinkle across its bridge."""
    cx, cy, eye_y, dark = face.cx, face.cy, face.eye_y, face.dark
    tip = who.uniform(-1.5, 1.5)
    nose_w = pose.width(_CREASE_WIDTH)
    draw.line(
        pose(np.array([[cx, eye_y + 2], [cx + tip, cy + 8], [cx + tip + 1.5, cy + 9.5]])),
        fill=dark,
        width=nose_w,
    )
    draw.line(pose(_parabola(cx - 4.5, cx + 4.5, cy + 9.5, 1.2, 8)), fill=dark, width=nose_w)
    if lip_raise > LIP_WRINKLE:
        for k in range(2 + int(lip_raise > 0.8)):
            y = eye_y + 4 + 2.2 * k
            draw.line(pose(np.array([[cx - 3, y], [cx + 3, y - 0.8]])), fill=dark, width=nose_w)


def _mouth_half_width(width: float) -> float:
    return max(4.0, 9.5 * width)


def _draw_mouth(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    who: np.random.Generator,
    geometry: tuple[float, float, float, float],
) -> None:
    """The mouth from ``geometry`` = (curve, opening, width, lip raise): curve bends both lips
    and lifts the corners, opening separates them, lip raise lifts one side of the upper lip."""
    curve, opening, width, lip_raise = geometry
    cx, mouth_y = face.cx, face.mouth_y
    half = _mouth_half_width(width)
    rel = _unit_span(14)
    corner_lift = curve * 3.0 * rel**2
    upper = _parabola(cx - half, cx + half, mouth_y, curve * 2.4)
    lower = _parabola(cx - half, cx + half, mouth_y, curve * 2.4 + max(0.0, opening) * 10)
    upper[:, 1] -= corner_lift + max(0.0, lip_raise) * 3.0 * np.clip(rel, 0, None)
    lower[:, 1] -= corner_lift
    lip = _rgb(face.skin * [0.75, 0.45, 0.45])
    lip_w = pose.width(who.uniform(1.2, 2.0))
    if opening > 0.12:
        draw.polygon(pose(np.concatenate([upper, lower[::-1]])), fill=(60, 20, 25))
        if curve > 0.3 and opening > 0.2:  # a smile shows the upper teeth
            teeth = upper.copy()
            teeth[:, 1] += np.minimum(2.5, (lower[:, 1] - upper[:, 1]) * 0.5)
            draw.polygon(pose(np.concatenate([upper, teeth[::-1]])), fill=(240, 240, 230))
        draw.line(pose(lower), fill=lip, width=lip_w)
    draw.line(pose(upper), fill=lip, width=lip_w)
    if curve > 0.45:
        _draw_smile_lines(draw, pose, face, half)


def _draw_smile_lines(draw: ImageDraw.ImageDraw, pose: _Pose, face: _Identity, half: float) -> None:
    """Creases beside the mouth corners (``half``: the mouth's half-width)."""
    mouth_y = face.mouth_y
    for sign in (-1, 1):
        x = face.cx + sign * (half + 2)
        draw.line(
            pose(
                np.array(
                    [
                        [x - sign * 1.5, mouth_y - 8],
                        [x + sign * 0.5, mouth_y - 3],
                        [x - sign * 0.5, mouth_y + 2],
                    ]
                )
            ),
            fill=face.dark,
            width=pose.width(_CREASE_WIDTH),
        )


def _draw_accessories(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    who: np.random.Generator,
    probability: float,
    eye_w: float,
    mouth_half: float,
) -> None:
    """Glasses, then a moustache, each with chance ``probability``."""
    cx, eye_dx, eye_y = face.cx, face.eye_dx, face.eye_y
    if who.random() < probability:  # glasses
        frame = _rgb(who.uniform(0, 120, 3))
        for sign in (-1, 1):
            draw.polygon(
                pose(_ellipse(cx + sign * eye_dx, eye_y, eye_w + 2.5, eye_w + 1, 20)),
                outline=frame,
                width=pose.width(1.0),
            )
        draw.line(
            pose(
                np.array([[cx - eye_dx + eye_w + 2.5, eye_y], [cx + eye_dx - eye_w - 2.5, eye_y]])
            ),
            fill=frame,
            width=pose.width(1.0),
        )
    if who.random() < probability:  # moustache
        tache = _parabola(
            cx - mouth_half * 0.9, cx + mouth_half * 0.9, face.mouth_y - 3.5, -1.5, 10
        )
        draw.line(pose(tache), fill=face.hair_rgb, width=pose.width(2.5), joint="curve")


def _draw_occluder(
    draw: ImageDraw.ImageDraw,
    pose: _Pose,
    face: _Identity,
    rng: np.random.Generator,
    probability: float,
) -> None:
    """With chance ``probability``, a hand, a card or a blob in front of the face, often over
    the eyes or the mouth."""
    if rng.random() < probability:
        target_y = (face.eye_y, face.mouth_y, face.cy + rng.uniform(-20, 30))[rng.integers(3)]
        ox, oy = face.cx + rng.uniform(-25, 25), target_y + rng.uniform(-6, 6)
        ow, oh = rng.uniform(10, 20), rng.uniform(7, 14)
        if rng.random() < 0.4:
            colour = _rgb(face.skin * rng.uniform(0.9, 1.1))  # a hand
        else:
            colour = _rgb(rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            shape = _ellipse(ox, oy, ow, oh, 20)
        else:
            shape = np.array(
                [[ox - ow, oy - oh], [ox + ow, oy - oh], [ox + ow, oy + oh], [ox - ow, oy + oh]]
            )
        draw.polygon(pose(shape), fill=colour)


def render_face(
    geometry: np.ndarray,
    rng: np.random.Generator,
    config: SynthConfig,
    identity_rng: np.random.Generator | None = None,
) -> Image.Image:
    """Draw one face with the given expression geometry, an identity and random nuisances.

    The identity (skin, hair, head shape, feature placement and sizes, ears, blush, iris,
    brows, nose, lips, glasses, moustache) is drawn from ``identity_rng``; everything else
    (background, clutter, pose, clothes, gaze, occluder, blur, lighting, noise) from ``rng``.
    Without ``identity_rng`` both come from ``rng``, in the same order as always, so synthfer's
    images are unchanged; a generator seeded the same way for every image of a person draws
    the same person each time (the identity draws never depend on ``rng``).
    """
    # The helpers interleave draws from both generators; with one generator for both, any
    # change to their order (or to the order of the calls below) changes every image.
    who = rng if identity_rng is None else identity_rng
    curve, opening, width, brow_h, brow_slant, eyes, lip_raise = geometry.tolist()
    canvas, draw, pose = _draw_scene(rng, config)
    face = _sample_identity(who)
    _draw_body(draw, pose, face, rng)
    _draw_long_hair_and_ears(draw, pose, face, who)
    _draw_head(draw, pose, face, who)
    eye_w, eye_h = _draw_eyes(draw, pose, face, who, rng, eyes)
    _draw_brows(draw, pose, face, who, eye_h, brow_h, brow_slant)
    _draw_nose(draw, pose, face, who, lip_raise)
    _draw_mouth(draw, pose, face, who, (curve, opening, width, lip_raise))
    _draw_accessories(draw, pose, face, who, config.accessory_prob, eye_w, _mouth_half_width(width))
    _draw_occluder(draw, pose, face, rng, config.occlusion_prob)
    image = _blur(canvas.reduce(SUPERSAMPLE), rng, config)
    return _photometric(image, rng, config)


def _blur(image: Image.Image, rng: np.random.Generator, config: SynthConfig) -> Image.Image:
    """With chance ``config.blur_prob``, slightly out of focus."""
    if rng.random() < config.blur_prob:
        side = config.image_size * SUPERSAMPLE  # the radius was set on the supersampled scale
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * side / 300))
    return image


def _photometric(image: Image.Image, rng: np.random.Generator, config: SynthConfig) -> Image.Image:
    """Lighting gradient, exposure, colour cast, greyscale and sensor noise."""
    pixels = np.array(image, dtype=np.float32)  # a writable copy
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, config.image_size, dtype=np.float32)
    strength = rng.uniform(0, config.lighting)
    gradient = 1 + strength * (ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta))
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3).astype(np.float32)  # cast
    pixels *= gradient[..., None] * gain
    if rng.random() < config.grey_prob:
        pixels = np.repeat(pixels.mean(axis=2, keepdims=True), 3, axis=2)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    noise *= rng.uniform(0, config.noise_std)
    pixels += noise
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


# ---- writing -------------------------------------------------------------------------------


def _render_one(args: tuple[SynthConfig, str, int, int, str]) -> None:
    config, split, index, label, path = args
    rng = np.random.default_rng([config.seed, _split_id(split), index])
    image = render_face(face_geometry(label, rng, config), rng, config)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=config.jpeg_quality)
    Path(path).write_bytes(buffer.getvalue())  # one write: cheaper than PIL's buffered writes


def _default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0))))


def generate_synthfer(root: Path, config: SynthConfig, workers: int | None = None) -> None:
    """Write synthfer at ``root`` in RAF-DB's official layout.

    ``workers`` processes render the images (default: the usable CPU cores, at most 8); the
    output does not depend on it.
    """
    root = Path(root)
    image_dir = root / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / LABEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    lines, jobs = [], []
    for split, size in (("train", config.train_size), ("test", config.test_size)):
        labels = split_labels(size, config.seed, split).tolist()
        for i, (name, label) in enumerate(zip(split_names(split, size), labels, strict=True)):
            lines.append(f"{name}.jpg {label + 1}\n")
            jobs.append((config, split, i, label, str(image_dir / f"{name}_aligned.jpg")))
    workers = _default_workers() if workers is None else workers
    # ~40 s on 2 cores for the default 7,500 faces: say so, with counts.
    what = f"synthfer: rendering {len(jobs)} faces (once, into {root.parent})"
    with counted(what, len(jobs), unit="faces") as advance:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                with ctrl_c_held():  # map submits every chunk at once: the processes start here
                    rendered = pool.map(_render_one, jobs, chunksize=64)
                for _ in rendered:  # a second Ctrl-C here cancels the chunks not yet started
                    advance(1)
        else:
            for job in jobs:
                _render_one(job)
                advance(1)
    (root / LABEL_FILE).write_text("".join(lines))
    settings = {**asdict(config), "generator_version": GENERATOR_VERSION}
    (root / "synthfer.json").write_text(json.dumps(settings, indent=1) + "\n")  # provenance


def ensure_synthfer(cache_dir: Path, config: SynthConfig, workers: int | None = None) -> Path:
    """synthfer's root, ``cache_dir/synthfer-<config fingerprint>``, generated on first use
    (safely when several processes ask at once: see :func:`harness.files.generate_once`)."""
    root = Path(cache_dir).expanduser() / f"synthfer-{config.fingerprint()}"
    return generate_once(
        root,
        lambda tmp: generate_synthfer(tmp, config, workers=workers),
        json.dumps(asdict(config)),
        "synthfer",
    )


def pin_generator(config: dict) -> dict:
    """Write every synthfer setting (defaults included) and the renderer version into the
    config, so that a change to the generator changes the run's id instead of reusing results
    made from other images."""
    generate = config["dataset"].get("generate")
    if generate is not None:
        try:
            config["dataset"]["generate"] = asdict(SynthConfig(**generate))
        except TypeError as err:  # an unknown key
            known = ", ".join(SynthConfig.__dataclass_fields__)
            raise ConfigError(f"dataset.generate: {err}; known settings: {known}") from None
        config["dataset"]["generator_version"] = GENERATOR_VERSION
    return config
