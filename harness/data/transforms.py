"""Image augmentations (FixMatch's weak and strong views) and the move to model input.

Every transform works on a single uint8 C×H×W tensor and draws its randomness from torch's
global CPU generator, which :mod:`harness.data.streams` seeds per sample so that augmentation is
reproducible and resumable. Normalisation happens on the device (:func:`to_model_input`) so that
loaders only ever move cheap uint8 tensors.
"""

from __future__ import annotations

import functools

import torch
from torchvision.transforms import v2

# ImageNet statistics: the backbones (timm / torchvision) are pretrained with them.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Cutout fill: mid-gray, so the erased square carries no colour or brightness cue.
CUTOUT_FILL = 127


def weak_view(size: int) -> v2.Transform:
    """FixMatch's weak augmentation: random horizontal flip, then a random ``size``×``size``
    crop of the image reflect-padded by ``size // 8`` on every side."""
    _check_size(size)
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
        ]
    )


def strong_view(size: int, *, ops: int, magnitude: int, cutout: float) -> v2.Transform:
    """``data.strong_augment.policy=torchvision``: the weak view, torchvision's
    RandAugment(``ops``, ``magnitude``) at a fixed magnitude bin, and
    Cutout of one gray square of side ``cutout * size`` placed uniformly inside the image
    (``cutout=0`` disables Cutout)."""
    _check_size(size)
    if ops < 0:
        raise ValueError(f"strong_view: ops must be >= 0, got {ops}")
    if not 0 <= magnitude <= 30:
        # RandAugment's magnitude bins are 0..num_magnitude_bins-1 (31 bins by default).
        raise ValueError(f"strong_view: magnitude must be in 0..30, got {magnitude}")
    if not 0.0 <= cutout <= 1.0:
        raise ValueError(f"strong_view: cutout must be a fraction in [0, 1], got {cutout}")
    steps: list[v2.Transform] = [weak_view(size), v2.RandAugment(num_ops=ops, magnitude=magnitude)]
    if cutout > 0:
        # RandomErasing with a fixed square aspect and area fraction cutout² is exactly Cutout
        # of side cutout·size on a size×size image.
        area = cutout * cutout
        steps.append(
            v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=CUTOUT_FILL)
        )
    return v2.Compose(steps)


def eval_view(size: int) -> v2.Transform:
    """Evaluation transform: no randomness; resizes to ``size``×``size`` only if the image is
    not already that size (torchvision returns same-size images untouched)."""
    _check_size(size)
    return v2.Resize((size, size), antialias=True)


def to_model_input(
    images_uint8: torch.Tensor, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """Turn a B×C×H×W uint8 batch into normalised float32 model input on ``device``.

    The uint8 tensor is transferred first (4× fewer bytes; ``non_blocking`` overlaps with
    compute when the source is pinned), then scaled to [0, 1] and normalised with
    :data:`MEAN` / :data:`STD` on the device. With ``channels_last`` the result uses
    ``torch.channels_last`` memory format (faster convolutions under mixed precision).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise ValueError(
            "to_model_input expects a B×C×H×W uint8 tensor, got "
            f"{images_uint8.dtype} of shape {tuple(images_uint8.shape)}"
        )
    x = images_uint8.to(device, non_blocking=True).float().div_(255.0)
    mean, std = _mean_std(x.device)
    x = x.sub_(mean).div_(std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@functools.cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device: building them every step would cost a host→device copy per batch.
    mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, -1, 1, 1)
    return mean, std


def _check_size(size: int) -> None:
    # Reflect padding needs a pad smaller than the image, and a crop needs a positive size.
    if size < 1:
        raise ValueError(f"image size must be a positive integer, got {size}")
