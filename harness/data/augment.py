"""Weak and strong views of a whole batch at once, on the device the batch trains on.

Loaders only gather uint8 rows and draw each sample's :class:`~harness.data.randaugment.ViewParams`
from its seed; :func:`apply_view` turns rows + parameters into the view, batched:

* flip + reflect-padded crop: one gather with per-sample index tables;
* each RandAugment step: one batched nearest-neighbour resampling for every sample whose op at
  that step is geometric (Rotate, ShearX/Y, TranslateX/Y), and one batched call per colour op
  over the samples that drew it, with per-sample factors;
* Cutout: one batched mask.

The ops run one step after the other, as USB applies them: they do not commute (a black corner
left by Rotate is inverted by a later Solarize, counted by Equalize/AutoContrast and averaged by
Contrast; nearest-neighbour rounding differs between one composed affine and two in a row), so
fusing all geometric ops of a view into one affine would change the view. The results equal the
per-sample reference :func:`~harness.data.randaugment.apply_view_one` bit for bit on the
geometric ops and Cutout (Pillow's own fixed-point arithmetic, reproduced in integers) and within
one grey level on the colour ops (torchvision's float formulas with per-sample factors), on CPU
and CUDA (tests/test_augment.py).

Why not torchvision's or kornia's batched ops: torchvision v2's colour kernels take one factor for
the whole batch, and its (and kornia's) affine warps sample with ``grid_sample``, whose rounding
is not Pillow's; equalize and autocontrast, which need no parameter, are torchvision's own.
Which samples run which op is decided on the CPU from the parameters, so the device never
synchronises to schedule work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.nn.functional import conv2d
from torchvision.transforms.v2 import functional as F

from harness.data.randaugment import CUTOUT_FILL, GEOMETRIC_OPS, OP_INDEX, OPS, ViewParams

_GEOMETRIC_IDS = np.array(sorted(OP_INDEX[name] for name in GEOMETRIC_OPS))


def apply_view(images: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """The view ``params`` describes, of a B×3×H×W uint8 batch on any device; ``params`` stay
    on the CPU. Equals :func:`~harness.data.randaugment.apply_view_one` sample by sample (see
    the module docstring for the tolerance)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected a B×3×H×W uint8 batch, got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[-2:] != (params.size, params.size) or len(images) != len(params):
        raise ValueError(
            f"{len(params)} view parameters of size {params.size} for a batch of shape "
            f"{tuple(images.shape)}"
        )
    out = weak_batch(images, params.flip, params.crop, params.pad)
    ops, magnitudes = params.ops.numpy(), params.magnitudes.numpy()
    for step in range(ops.shape[1]):
        out = apply_step(out, ops[:, step], magnitudes[:, step])
    if params.cutout.shape[1]:
        out = cutout_batch(out, params.cutout)
    return out


# --- weak view -----------------------------------------------------------------------------------


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect (no edge repeat, torchvision's/numpy's ``reflect``) indices into 0..n-1."""
    index = index.abs()
    return torch.where(index >= n, 2 * (n - 1) - index, index)


def weak_batch(
    images: torch.Tensor, flip: torch.Tensor, crop: torch.Tensor, pad: int
) -> torch.Tensor:
    """Mirror where ``flip``, then crop at ``crop[:, 0:2] = (left, top)`` of the images
    reflect-padded by ``pad``: one gather. Equals :func:`~harness.data.randaugment.weak_one`."""
    b, c, h, w = images.shape
    device = images.device
    crop = crop.to(device, non_blocking=True)
    cols = _reflect(torch.arange(w, device=device) + crop[:, :1] - pad, w)  # (B, W)
    cols = torch.where(flip.to(device, non_blocking=True)[:, None], w - 1 - cols, cols)
    rows = _reflect(torch.arange(h, device=device) + crop[:, 1:2] - pad, h)  # (B, H)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return images.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


# --- one RandAugment step ------------------------------------------------------------------------


def apply_step(images: torch.Tensor, ops: np.ndarray, magnitudes: np.ndarray) -> torch.Tensor:
    """Op ``ops[i]`` with magnitude ``magnitudes[i]`` on image ``i``, batched per op kind."""
    out = images.clone()
    groups: list[tuple[np.ndarray, Callable[[torch.Tensor, np.ndarray], torch.Tensor]]] = []
    geometric = np.isin(ops, _GEOMETRIC_IDS)
    if geometric.any():
        groups.append((np.flatnonzero(geometric), _geometric_group(ops[geometric])))
    for op in np.unique(ops[~geometric]):
        groups.append((np.flatnonzero(ops == op), _COLOUR_OPS[OPS[op][0]]))
    for rows, fn in groups:
        if len(rows) == len(images):  # everyone drew it: no gather/scatter of the batch
            out = fn(images, magnitudes[rows])
            continue
        index = torch.from_numpy(rows).to(images.device, non_blocking=True)
        out[index] = fn(images[index], magnitudes[rows])
    return out


def _geometric_group(ops: np.ndarray) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    def run(images: torch.Tensor, magnitudes: np.ndarray) -> torch.Tensor:
        size = images.shape[-1]
        matrices = np.array(
            [pil_matrix(OPS[op][0], v, size) for op, v in zip(ops, magnitudes, strict=True)]
        )
        return affine_nearest(images, matrices)

    return run


def pil_matrix(name: str, v: float, size: int) -> tuple[float, ...]:
    """The 6 coefficients USB's op hands to Pillow's AFFINE transform (output → input), for a
    ``size``×``size`` image; Rotate's is built as ``PIL.Image.rotate`` builds it."""
    if name == "ShearX":
        return (1.0, v, 0.0, 0.0, 1.0, 0.0)
    if name == "ShearY":
        return (1.0, 0.0, 0.0, v, 1.0, 0.0)
    if name == "TranslateX":
        return (1.0, 0.0, v * size, 0.0, 1.0, 0.0)
    if name == "TranslateY":
        return (1.0, 0.0, 0.0, 0.0, 1.0, v * size)
    if name == "Rotate":
        angle = -math.radians(v)
        a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
        d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
        centre = size / 2
        c = a * -centre + b * -centre + centre
        f = d * -centre + e * -centre + centre
        return (a, b, c, d, e, f)
    raise ValueError(f"{name} is not a geometric op")


def affine_nearest(images: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """Pillow's nearest-neighbour AFFINE transform of each image by its row of ``matrices``
    ((n, 6) float64, output → input), black outside: bit-exact on any device.

    Pillow (``libImaging/Geometry.c``) takes two paths: without rotation or shear
    (``a[1] == a[3] == 0``) it floors ``a[2] + (x + ½)·a[0]`` in doubles; otherwise it samples
    input ``((A2 + x·A0 + y·A1) >> 16, (A5 + x·A3 + y·A4) >> 16)`` with the coefficients rounded
    to 16.16 fixed point. Both are reproduced here, the second in int64 arithmetic.
    """
    n, c, h, w = images.shape
    device = images.device
    a = np.asarray(matrices, dtype=np.float64).reshape(n, 6)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    scale = (a[:, 1] == 0) & (a[:, 3] == 0)
    # Scale path: separable per-column / per-row tables, in doubles on the CPU (n × size).
    col = np.floor(a[:, 2:3] + a[:, 0:1] * 0.5 + xs * a[:, 0:1]).astype(np.int64)
    row = np.floor(a[:, 5:6] + a[:, 4:5] * 0.5 + ys * a[:, 4:5]).astype(np.int64)
    # Fixed-point path: FIX(v) = floor(v · 65536 + ½) of Pillow's affine_fixed.
    fixed = np.floor(
        np.stack(
            [
                a[:, 0],
                a[:, 1],
                a[:, 2] + a[:, 0] * 0.5 + a[:, 1] * 0.5,
                a[:, 3],
                a[:, 4],
                a[:, 5] + a[:, 3] * 0.5 + a[:, 4] * 0.5,
            ],
            axis=1,
        )
        * 65536.0
        + 0.5
    ).astype(np.int64)
    k = torch.from_numpy(fixed).to(device, non_blocking=True).view(n, 6, 1, 1)
    x = torch.arange(w, device=device, dtype=torch.int64).view(1, 1, w)
    y = torch.arange(h, device=device, dtype=torch.int64).view(1, h, 1)
    src_x = (k[:, 2] + x * k[:, 0] + y * k[:, 1]) >> 16
    src_y = (k[:, 5] + x * k[:, 3] + y * k[:, 4]) >> 16
    if scale.any():
        use = torch.from_numpy(scale).to(device, non_blocking=True).view(n, 1, 1)
        col_t = torch.from_numpy(col).to(device, non_blocking=True).view(n, 1, w)
        row_t = torch.from_numpy(row).to(device, non_blocking=True).view(n, h, 1)
        src_x = torch.where(use, col_t.expand(n, h, w), src_x)
        src_y = torch.where(use, row_t.expand(n, h, w), src_y)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(n, 1, h * w)
    out = images.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)
    return out.mul_(inside.view(n, 1, h, w))


# --- colour ops: torchvision v2's formulas with one factor per image ------------------------------


def _factor(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-image float32 factors shaped to broadcast over C×H×W."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(like.device).view(-1, 1, 1, 1)


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: np.ndarray) -> torch.Tensor:
    """torchvision's ``_blend``: ``image·r + other·(1 − r)``, clamped, truncated to uint8."""
    r = _factor(ratio, image)
    rest = _factor(1.0 - np.asarray(ratio, dtype=np.float64), image)
    # addcmul: on the CPU it rounds as torchvision's add_(other, alpha=1 - r) (a plain
    # ``+ other * rest`` differs by one grey level on ~0.1% of pixels).
    out = image.float().mul_(r).addcmul_(other.expand_as(image), rest)
    return out.clamp_(0, 255).to(torch.uint8)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """torchvision's luma (0.2989 R + 0.587 G + 0.114 B), floored, as float (B×1×H×W)."""
    return F.rgb_to_grayscale(images.float()).floor_()


def _brightness(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    return images.float().mul_(_factor(v, images)).clamp_(0, 255).to(torch.uint8)


def _color(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    return _blend(images, _grey(images), v)


def _contrast(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    return _blend(images, _grey(images).mean(dim=(-3, -2, -1), keepdim=True), v)


def _sharpness(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    # torchvision's adjust_sharpness: blend the interior with a 3×3 smoothing (1s around a 5,
    # /13, rounded), the one-pixel border kept; written out for a per-image factor.
    c, h, w = images.shape[1:]
    if h <= 2 or w <= 2:
        return images
    a, b = 1.0 / 13.0, 5.0 / 13.0  # as torchvision builds it (doubles rounded to float32)
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], device=images.device)
    kernel = kernel.expand(c, 1, 3, 3)
    out = images.float()
    blurred = conv2d(out, kernel, groups=c).round_()
    interior = out[..., 1:-1, 1:-1]
    interior.addcmul_(blurred.sub_(interior), _factor(1.0 - np.asarray(v, np.float64), images))
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    bits = np.asarray(v).astype(np.int64)  # USB's int(v)
    masks = ((0xFF << (8 - bits)) & 0xFF).astype(np.uint8)
    return images & torch.from_numpy(masks).to(images.device).view(-1, 1, 1, 1)


def _solarize(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    threshold = torch.from_numpy(np.asarray(v, dtype=np.float64)).to(images.device)
    return torch.where(images >= threshold.view(-1, 1, 1, 1), 255 - images, images)


_COLOUR_OPS: dict[str, Callable[[torch.Tensor, np.ndarray], torch.Tensor]] = {
    "AutoContrast": lambda x, _: F.autocontrast(x),  # per image and channel already
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Equalize": lambda x, _: F.equalize(x),  # per-image histograms (scatter_add) already
    "Identity": lambda x, _: x,
    "Posterize": _posterize,
    "Sharpness": _sharpness,
    "Solarize": _solarize,
}


# --- Cutout --------------------------------------------------------------------------------------


def cutout_batch(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """USB's Cutout of each image (``boxes`` (B, 3) = side, centre x, centre y on the CPU): the
    square of :func:`~harness.data.randaugment.cutout_box`, filled with USB's grey."""
    n, c, h, w = images.shape
    b = boxes.numpy()
    side, cx, cy = b[:, 0], b[:, 1], b[:, 2]
    # cutout_box, vectorised: int() truncates towards zero, and every operand here is >= 0.
    x0 = np.maximum(0.0, cx - side / 2.0).astype(np.int64)
    y0 = np.maximum(0.0, cy - side / 2.0).astype(np.int64)
    x1 = np.minimum(w, np.minimum(float(w), x0 + side).astype(np.int64) + 1)
    y1 = np.minimum(h, np.minimum(float(h), y0 + side).astype(np.int64) + 1)
    edges = torch.from_numpy(np.stack([x0, x1, y0, y1], axis=1)).to(images.device).view(n, 4, 1)
    x = torch.arange(w, device=images.device).view(1, w)
    y = torch.arange(h, device=images.device).view(1, h)
    in_x = (x >= edges[:, 0]) & (x < edges[:, 1])  # (n, W)
    in_y = (y >= edges[:, 2]) & (y < edges[:, 3])  # (n, H)
    mask = (in_y[:, :, None] & in_x[:, None, :]).view(n, 1, h, w)
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8, device=images.device).view(1, c, 1, 1)
    return torch.where(mask, fill, images)
