"""The strong view as FixMatch and USB define it: RandAugment with random magnitudes, then Cutout.

Facts from USB (``semilearn/datasets/augmentation/randaugment.py``, ``RandAugment(3, 5)`` in its
classic-CV datasets; the ``5`` is unused there): after the weak view (flip + reflect-padded crop),
``N`` ops are picked **with replacement** from the 14 of :data:`OPS`, each with a magnitude drawn
**uniformly** over that op's range; then Cutout of a grey square whose side is uniform in
``[0, 0.5]`` of the image side. docs/augmentation.md tabulates every op, here and in USB.

Everything random about a sample's view is drawn up front, by :func:`draw_view_params`, into a
:class:`ViewParams` of small tensors — a pure function of the sample's augmentation seed (which
:mod:`harness.data.streams` derives from the run seed and the sample's position), so a resumed run
and any number of loader workers see the same views. Applying the parameters is deterministic:
:func:`apply_view_one` here is the per-sample reference (torchvision v2 functional ops where they
agree with USB's PIL ops to one grey level, PIL itself for the geometric ops), and
:mod:`harness.data.augment` applies whole batches at once on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from harness.errors import ConfigError

# (name, low, high) in USB's order; an op's magnitude is uniform on [low, high).
OPS: tuple[tuple[str, float, float], ...] = (
    ("AutoContrast", 0.0, 1.0),
    ("Brightness", 0.05, 0.95),
    ("Color", 0.05, 0.95),
    ("Contrast", 0.05, 0.95),
    ("Equalize", 0.0, 1.0),
    ("Identity", 0.0, 1.0),
    ("Posterize", 4.0, 8.0),
    ("Rotate", -30.0, 30.0),
    ("Sharpness", 0.05, 0.95),
    ("ShearX", -0.3, 0.3),
    ("ShearY", -0.3, 0.3),
    ("Solarize", 0.0, 256.0),
    ("TranslateX", -0.3, 0.3),
    ("TranslateY", -0.3, 0.3),
)
OP_INDEX: dict[str, int] = {name: i for i, (name, _, _) in enumerate(OPS)}
GEOMETRIC_OPS: frozenset[str] = frozenset(
    {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
)

# USB's Cutout fill, (125, 123, 114): about the ImageNet mean colour.
CUTOUT_FILL: tuple[int, int, int] = (125, 123, 114)
POLICIES: tuple[str, ...] = ("usb", "torchvision")
MAX_OPS = 16  # uniforms of one view are drawn from a block of _VIEW_STRIDE counters
_VIEW_STRIDE = 64  # 3 (weak) + 2 * MAX_OPS + 3 (cutout) <= 64


@dataclass(frozen=True)
class StrongPolicy:
    """``data.strong_augment``: which strong view, with how many ops and how much Cutout.

    ``policy="usb"``: USB's RandAugment with ``ops`` ops at random magnitudes, then Cutout of side
    uniform in ``[0, cutout]`` of the image side. ``policy="torchvision"``: torchvision's
    ``RandAugment(ops, magnitude)`` at a fixed magnitude bin and Cutout of exactly ``cutout`` of
    the side (the harness's strong view before USB's was adopted).
    """

    policy: str
    ops: int
    magnitude: int
    cutout: float

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(
                f"data.strong_augment.policy={self.policy!r}: choose one of {', '.join(POLICIES)}"
            )
        if not 0 <= self.ops <= MAX_OPS:
            raise ConfigError(f"data.strong_augment.ops={self.ops}: must be in 0..{MAX_OPS}")
        if not 0 <= self.magnitude <= 30:
            # torchvision's RandAugment has 31 magnitude bins, 0..30.
            raise ConfigError(f"data.strong_augment.magnitude={self.magnitude}: must be in 0..30")
        if not 0.0 <= self.cutout <= 1.0:
            raise ConfigError(
                f"data.strong_augment.cutout={self.cutout}: must be a fraction in [0, 1]"
            )

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> StrongPolicy:
        """Build from the ``data.strong_augment`` config section (every key required: the
        defaults live in configs/config.yaml only)."""
        try:
            return cls(
                policy=str(section["policy"]),
                ops=int(section["ops"]),
                magnitude=int(section["magnitude"]),
                cutout=float(section["cutout"]),
            )
        except KeyError as err:
            raise ConfigError(f"data.strong_augment.{err.args[0]} is missing") from None


@dataclass(frozen=True)
class ViewParams:
    """Every random choice of one view for B samples (dim 0), as plain tensors.

    ``flip`` (B,) bool: mirror left-right first. ``crop`` (B, 2) int64: ``(left, top)`` of the
    ``size``×``size`` crop in the image reflect-padded by ``pad`` on every side. ``ops`` (B, N)
    int64 indices into :data:`OPS` and ``magnitudes`` (B, N) float64, applied in order (N = 0 for
    the weak view). ``cutout`` (B, 3) float64 ``(side, centre x, centre y)`` in pixels, or (B, 0)
    for no Cutout.
    """

    size: int
    pad: int
    flip: torch.Tensor
    crop: torch.Tensor
    ops: torch.Tensor
    magnitudes: torch.Tensor
    cutout: torch.Tensor

    def __len__(self) -> int:
        return len(self.flip)

    def rows(self, start: int, stop: int) -> ViewParams:
        """The parameters of samples ``start .. stop-1``."""
        tensors = (self.flip, self.crop, self.ops, self.magnitudes, self.cutout)
        return ViewParams(self.size, self.pad, *(t[start:stop] for t in tensors))


# SplitMix64 (Steele et al. 2014): the k-th output for seed s is mix(s + (k+1)·γ). It draws a
# whole batch's uniforms in a few vectorised numpy ops, with no generator object per sample.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seeds: np.ndarray, start: int, count: int) -> np.ndarray:
    """(B, count) float64 uniforms in [0, 1): outputs ``start .. start+count-1`` of each seed's
    SplitMix64 stream. A pure function of (seed, counter): independent of batch composition."""
    seeds = np.asarray(seeds, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    counters = np.arange(start + 1, start + count + 1, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):  # wrap-around multiplication is the algorithm
        bits = _splitmix64(seeds + counters * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw_view_params(
    seeds: np.ndarray, view_index: int, size: int, n_ops: int, cutout: float | None
) -> ViewParams:
    """Parameters of view number ``view_index`` of each sample, from its augmentation seed.

    The weak view is ``n_ops=0, cutout=None``; USB's strong view is ``n_ops=N, cutout=0.5``
    (``cutout=0`` turns Cutout off).
    Flip with probability 1/2; crop offsets uniform over the ``2·pad + 1`` positions (pad =
    size // 8, USB's 0.875 crop ratio); op ids uniform over :data:`OPS` with replacement;
    magnitudes uniform over each op's range; Cutout side uniform on ``[0, cutout·size)`` and its
    centre uniform on ``(1, size]`` per axis, as USB's ``np.random.uniform(w)`` (low=w, high=1).
    """
    if not 0 <= n_ops <= MAX_OPS:
        raise ValueError(f"n_ops must be in 0..{MAX_OPS}, got {n_ops}")
    pad = size // 8
    u = uniforms(seeds, view_index * _VIEW_STRIDE, 3 + 2 * n_ops + 3)
    b = len(u)
    flip = torch.from_numpy(u[:, 0] < 0.5)
    crop = torch.from_numpy(np.floor(u[:, 1:3] * (2 * pad + 1)).astype(np.int64))
    ops = np.minimum(np.floor(u[:, 3 : 3 + n_ops] * len(OPS)).astype(np.int64), len(OPS) - 1)
    low = np.array([lo for _, lo, _ in OPS])[ops]
    high = np.array([hi for _, _, hi in OPS])[ops]
    magnitudes = low + (high - low) * u[:, 3 + n_ops : 3 + 2 * n_ops]
    if not cutout:  # None or 0: no Cutout (USB skips a side of 0 too)
        box = np.zeros((b, 0))
    else:
        c = u[:, 3 + 2 * n_ops :]
        box = np.concatenate([c[:, :1] * cutout * size, size + (1.0 - size) * c[:, 1:3]], axis=1)
    return ViewParams(
        size,
        pad,
        flip,
        crop,
        torch.from_numpy(ops),
        torch.from_numpy(magnitudes),
        torch.from_numpy(np.ascontiguousarray(box)),
    )


def cutout_box(size: int, side: float, cx: float, cy: float) -> tuple[int, int, int, int]:
    """USB's Cutout square as half-open pixel ranges ``(x0, x1, y0, y1)``.

    USB: ``x0 = int(max(0, cx - side/2))``, ``x1 = min(w, x0 + side)``, then PIL's
    ``rectangle((x0, y0, x1, y1))`` fills columns ``x0 .. int(x1)`` *inclusive* (PIL truncates
    float corners). So the square is ``int(side) + 1`` pixels wide, shifted (not clipped) at the
    left and top borders and clipped at the right and bottom ones.
    """
    x0 = int(max(0.0, cx - side / 2.0))
    y0 = int(max(0.0, cy - side / 2.0))
    x1 = min(size, int(min(float(size), x0 + side)) + 1)
    y1 = min(size, int(min(float(size), y0 + side)) + 1)
    return x0, x1, y0, y1


# --- The per-sample reference (test oracle for harness.data.augment) ---------------------------


def weak_one(image: torch.Tensor, flip: bool, left: int, top: int, pad: int) -> torch.Tensor:
    """Weak view of one 3×H×W uint8 image: optional mirror, then the crop at ``(left, top)`` of
    the image reflect-padded by ``pad`` (torchvision's ``RandomCrop(padding_mode="reflect")``)."""
    size = image.shape[-1]
    out = F.horizontal_flip(image) if flip else image
    if pad:
        out = F.pad(out, [pad, pad, pad, pad], padding_mode="reflect")
    return F.crop(out, top, left, size, size)


def _pil_affine(image: torch.Tensor, matrix: tuple[float, ...]) -> torch.Tensor:
    """USB's ``img.transform(img.size, AFFINE, matrix)``: nearest neighbour, black outside."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    out = pil.transform(pil.size, Image.Transform.AFFINE, matrix)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1).contiguous()


def _pil_rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """USB's ``img.rotate(v)``: counter-clockwise about the centre, nearest, black corners."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    return torch.from_numpy(np.asarray(pil.rotate(degrees)).copy()).permute(2, 0, 1).contiguous()


def apply_op_one(image: torch.Tensor, op: int, v: float) -> torch.Tensor:
    """One RandAugment op of :data:`OPS` with magnitude ``v`` on one 3×H×W uint8 image, as USB
    applies it (colour ops: torchvision v2, at most one grey level from PIL's; geometric: PIL)."""
    name = OPS[op][0]
    h, w = image.shape[-2:]
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Brightness":
        return F.adjust_brightness(image, v)
    if name == "Color":
        return F.adjust_saturation(image, v)
    if name == "Contrast":
        return F.adjust_contrast(image, v)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Identity":
        return image
    if name == "Posterize":
        return F.posterize(image, int(v))  # USB: int(v), so 8 bits only when v == 8 exactly
    if name == "Rotate":
        return _pil_rotate(image, v)
    if name == "Sharpness":
        return F.adjust_sharpness(image, v)
    if name == "ShearX":
        return _pil_affine(image, (1, v, 0, 0, 1, 0))
    if name == "ShearY":
        return _pil_affine(image, (1, 0, 0, v, 1, 0))
    if name == "Solarize":
        # PIL inverts pixels >= v; v > 255 inverts none (torchvision rejects such thresholds).
        return F.solarize(image, v) if v <= 255 else image
    if name == "TranslateX":
        return _pil_affine(image, (1, 0, v * w, 0, 1, 0))
    if name == "TranslateY":
        return _pil_affine(image, (1, 0, 0, 0, 1, v * h))
    raise ValueError(f"unknown op {op}")


def cutout_one(image: torch.Tensor, side: float, cx: float, cy: float) -> torch.Tensor:
    """USB's Cutout of one 3×H×W uint8 image (see :func:`cutout_box`)."""
    x0, x1, y0, y1 = cutout_box(image.shape[-1], side, cx, cy)
    out = image.clone()
    out[:, y0:y1, x0:x1] = torch.tensor(CUTOUT_FILL, dtype=torch.uint8).view(3, 1, 1)
    return out


def apply_view_one(image: torch.Tensor, params: ViewParams, i: int) -> torch.Tensor:
    """Sample ``i`` of ``params`` applied to one 3×H×W uint8 image, one op after the other."""
    if image.shape[-2:] != (params.size, params.size):
        raise ValueError(f"expected a {params.size}×{params.size} image, got {tuple(image.shape)}")
    left, top = (int(c) for c in params.crop[i])
    out = weak_one(image, bool(params.flip[i]), left, top, params.pad)
    for op, v in zip(params.ops[i].tolist(), params.magnitudes[i].tolist(), strict=True):
        out = apply_op_one(out, op, v)
    if params.cutout.shape[1]:
        out = cutout_one(out, *params.cutout[i].tolist())
    return out
