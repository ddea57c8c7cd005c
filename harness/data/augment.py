"""Weak and strong views of a whole batch at once, on the device the batch trains on.

Loaders only gather uint8 rows and draw each sample's :class:`~harness.data.randaugment.ViewParams`
from its seed; :func:`apply_view` turns rows + parameters into the view, batched:

* flip + reflect-padded crop: one gather with per-sample index tables;
* each RandAugment step: one batched nearest-neighbour resampling for every sample whose op at
  that step is geometric (Rotate, ShearX/Y, TranslateX/Y), and one batched call per colour op
  over the samples that drew it, with per-sample factors;
* Cutout: one batched mask (on the CPU, one slice fill per image).

The ops run one step after the other, as USB applies them: they do not commute (a black corner
left by Rotate is inverted by a later Solarize, counted by Equalize/AutoContrast and averaged by
Contrast; nearest-neighbour rounding differs between one composed affine and two in a row), so
fusing all geometric ops of a view into one affine would change the view. The results equal the
per-sample reference :func:`~harness.data.randaugment.apply_view_one`: geometric ops and Cutout
bit for bit on any device (Pillow's own fixed-point arithmetic, reproduced in integers); colour
ops (torchvision's float formulas, with one factor per image) bit for bit on the CPU and within
one grey level on CUDA (tests/test_augment.py).

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
from torchvision.transforms.v2 import functional as F

from harness.data.randaugment import CUTOUT_FILL, GEOMETRIC_OPS, OP_INDEX, OPS, ViewParams

_GEOMETRIC_IDS = np.array(sorted(OP_INDEX[name] for name in GEOMETRIC_OPS))
# On the CPU, views of 64 images at a time run ~20% faster than of 448 (measured at 112 px):
# the intermediate tensors stay small enough to be reused instead of freshly mapped.
_CPU_CHUNK = 64


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
    if images.device.type == "cpu" and len(images) > _CPU_CHUNK:
        starts = range(0, len(images), _CPU_CHUNK)
        chunks = [(images[a : a + _CPU_CHUNK], params.rows(a, a + _CPU_CHUNK)) for a in starts]
        return torch.cat([apply_view(x, p) for x, p in chunks])
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
    # One group for all geometric ops (one resampling), one per colour op.
    group = np.where(np.isin(ops, _GEOMETRIC_IDS), -1, ops)
    # Sorting the batch by group makes every group a contiguous slice: one index_select in and
    # one out, instead of a gather and a scatter per group (index_copy_ is slow on the CPU).
    order = np.argsort(group, kind="stable")
    ops, magnitudes, group = ops[order], magnitudes[order], group[order]
    identity = bool((order == np.arange(len(order))).all())
    device = images.device
    sorted_images = images if identity else images.index_select(0, _index(order, device))
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    pieces = []
    for a, b in zip(starts, np.r_[starts[1:], len(group)], strict=True):
        fn = _geometric_group(ops[a:b]) if group[a] < 0 else _COLOUR_OPS[OPS[group[a]][0]]
        pieces.append(fn(sorted_images[a:b], magnitudes[a:b]))
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return out if identity else out.index_select(0, _index(np.argsort(order), device))


def _index(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(
        device, non_blocking=True
    )


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
    to 16.16 fixed point. Both are written as ``(row[y] + col[x]) >> 16`` with small per-image
    tables built on the CPU, so the device does a few int64 passes per coordinate.
    """
    n, c, h, w = images.shape
    device = images.device
    # A one-pixel black border takes every source outside the image once clamped into it, so
    # no per-pixel inside/outside test is needed: int64 add, shift, clamp per coordinate.
    pad = 1
    row_x, col_x, row_y, col_y = _source_tables(np.asarray(matrices, np.float64), h, w)
    tables = np.concatenate([row_x + (pad << 16), col_x, row_y + (pad << 16), col_y], axis=1)
    tables_t = torch.from_numpy(tables).to(device, non_blocking=True)
    row_x, col_x, row_y, col_y = tables_t.split([h, w, h, w], dim=1)
    wide = w + 2 * pad
    src_x = (row_x[:, :, None] + col_x[:, None, :]).bitwise_right_shift_(16).clamp_(0, wide - 1)
    src_y = (row_y[:, :, None] + col_y[:, None, :]).bitwise_right_shift_(16)
    index = src_y.clamp_(0, h + 2 * pad - 1).mul_(wide).add_(src_x).view(n, 1, h * w)
    bordered = torch.nn.functional.pad(images, (pad, pad, pad, pad)).view(n, c, -1)
    return bordered.gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def _source_tables(
    a: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """int64 ``(row_x (n,h), col_x (n,w), row_y (n,h), col_y (n,w))`` with source
    ``x = (row_x[y] + col_x[x]) >> 16`` and ``y = (row_y[y] + col_y[x]) >> 16``, as Pillow."""
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    # Fixed-point path: FIX(v) = floor(v · 65536 + ½) of Pillow's affine_fixed.
    k = np.floor(
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
    iy, ix = np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64)
    row_x = k[:, 2:3] + iy * k[:, 1:2]
    col_x = ix * k[:, 0:1]
    row_y = k[:, 5:6] + iy * k[:, 4:5]
    col_y = ix * k[:, 3:4]
    # Scale path (ImagingScaleAffine): separable floors in doubles, shifted into the same form.
    scale = (a[:, 1] == 0) & (a[:, 3] == 0)
    if scale.any():
        s = a[scale]
        col = np.floor(s[:, 2:3] + s[:, 0:1] * 0.5 + xs * s[:, 0:1]).astype(np.int64)
        row = np.floor(s[:, 5:6] + s[:, 4:5] * 0.5 + ys * s[:, 4:5]).astype(np.int64)
        # Clamped to -1..size: any index outside the image is as good as another (and the
        # shifted value stays far from int64 overflow).
        row_x[scale], col_x[scale] = 0, np.clip(col, -1, w) << 16
        row_y[scale], col_y[scale] = np.clip(row, -1, h) << 16, 0
    return row_x, col_x, row_y, col_y


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
    # /13, rounded), the one-pixel border kept. The smoothing is computed exactly in integers:
    # S/13 is never within 1/26 of a half, so round(S/13) equals torchvision's rounded float32
    # convolution, and the integer sums run ~4× faster than its depthwise conv2d on the CPU.
    h, w = images.shape[-2:]
    if h <= 2 or w <= 2:
        return images
    x = images.to(torch.int16)
    across = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]  # (…, H, W-2)
    total = across[..., :-2, :] + across[..., 1:-1, :] + across[..., 2:, :]
    total += 4 * x[..., 1:-1, 1:-1]  # centre weight 5 = 1 (in the box) + 4
    blurred = total.add_(6).div_(13, rounding_mode="floor")  # round half up; no ties exist
    out = images.float()
    interior = out[..., 1:-1, 1:-1]
    rest = _factor(1.0 - np.asarray(v, np.float64), images)
    interior.addcmul_(blurred.float().sub_(interior), rest)
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    bits = np.asarray(v).astype(np.int64)  # USB's int(v)
    masks = ((0xFF << (8 - bits)) & 0xFF).astype(np.uint8)
    return images & torch.from_numpy(masks).to(images.device).view(-1, 1, 1, 1)


def _solarize(images: torch.Tensor, v: np.ndarray) -> torch.Tensor:
    # PIL inverts pixels >= v; for integer pixels that is >= ceil(v), and 255 - x == x ^ 255.
    # All in uint8: comparing with float thresholds would widen every pixel to float64.
    threshold = np.ceil(np.asarray(v, dtype=np.float64))
    flip = np.where(threshold <= 255, 255, 0).astype(np.uint8)  # v > 255 inverts nothing
    t = torch.from_numpy(np.minimum(threshold, 255).astype(np.uint8)).to(images.device)
    f = torch.from_numpy(flip).to(images.device)
    return images ^ ((images >= t.view(-1, 1, 1, 1)) * f.view(-1, 1, 1, 1))


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
    edges = _cutout_edges(boxes.numpy(), images.shape[-1])
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8, device=images.device).view(-1, 1, 1)
    if images.device.type == "cpu":
        # On the CPU one slice fill per image beats the batched mask ~4× (it touches only the
        # square); on a GPU the mask is one kernel instead of B.
        out = images.clone()
        for i, (x0, x1, y0, y1) in enumerate(edges.tolist()):
            out[i, :, y0:y1, x0:x1] = fill
        return out
    return torch.where(cutout_mask(edges, images.shape[-2:], images.device), fill, images)


def cutout_mask(edges: np.ndarray, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """(B, 1, H, W) bool mask of the half-open boxes ``edges`` (B, 4) = ``(x0, x1, y0, y1)``."""
    h, w = shape
    e = torch.from_numpy(edges).to(device).view(-1, 4, 1)
    x = torch.arange(w, device=device).view(1, w)
    y = torch.arange(h, device=device).view(1, h)
    in_x = (x >= e[:, 0]) & (x < e[:, 1])  # (B, W)
    in_y = (y >= e[:, 2]) & (y < e[:, 3])  # (B, H)
    return (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)


def _cutout_edges(boxes: np.ndarray, size: int) -> np.ndarray:
    """:func:`~harness.data.randaugment.cutout_box` for every row of ``boxes``, vectorised
    (``int()`` truncates towards zero, and every operand here is >= 0)."""
    side, cx, cy = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    x0 = np.maximum(0.0, cx - side / 2.0).astype(np.int64)
    y0 = np.maximum(0.0, cy - side / 2.0).astype(np.int64)
    x1 = np.minimum(size, np.minimum(float(size), x0 + side).astype(np.int64) + 1)
    y1 = np.minimum(size, np.minimum(float(size), y0 + side).astype(np.int64) + 1)
    return np.stack([x0, x1, y0, y1], axis=1)
