"""Batched views on the device equal the per-sample reference, op by op and view by view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.augment import (
    _cutout_edges,
    apply_step,
    apply_view,
    cutout_batch,
    cutout_mask,
    weak_batch,
)
from harness.data.randaugment import (
    CUTOUT_FILL,
    GEOMETRIC_OPS,
    OPS,
    apply_op_one,
    apply_view_one,
    cutout_one,
    draw_view_params,
    weak_one,
)

B = 24
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def _images(size: int, n: int = B, seed: int = 0) -> torch.Tensor:
    """Half noise, half smooth gradients (histogram ops and blends behave differently)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = np.stack([200 * xx + 30, 150 * yy + 50, 80 * (xx + yy) + 20])
    smooth = np.clip(smooth[None] + rng.normal(0, 6, (n, 3, size, size)), 0, 255)
    noise[n // 2 :] = smooth[n // 2 :].astype(np.uint8)
    return torch.from_numpy(noise)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.cpu().int() - b.cpu().int()).abs().max())


def _magnitudes(op: int, rng: np.random.Generator) -> np.ndarray:
    name, low, high = OPS[op]
    v = rng.uniform(low, high, B)
    v[:2] = low, np.nextafter(high, low)  # both ends of the range
    if name in GEOMETRIC_OPS:
        v[2] = 0.0  # Pillow's separate path for a transform without rotation or shear
    return v


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [32, 49])
@pytest.mark.parametrize("op", range(len(OPS)), ids=[name for name, _, _ in OPS])
def test_each_op_batched_equals_per_sample(op: int, size: int, device: str) -> None:
    images = _images(size, seed=op)
    v = _magnitudes(op, np.random.default_rng(op))
    batched = apply_step(images.to(device), np.full(B, op), v)
    assert batched.device.type == device and batched.dtype == torch.uint8
    reference = torch.stack([apply_op_one(images[i], op, float(v[i])) for i in range(B)])
    # Geometric ops reproduce Pillow's integer arithmetic: exact everywhere. Colour ops share
    # torchvision's float formulas: exact on the CPU, within one grey level elsewhere.
    exact = OPS[op][0] in GEOMETRIC_OPS or device == "cpu"
    assert _max_diff(batched, reference) <= (0 if exact else 1)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_ops_in_one_step_go_to_the_right_samples(device: str) -> None:
    rng = np.random.default_rng(5)
    images = _images(40)
    ops = rng.integers(0, len(OPS), B)
    v = np.array([rng.uniform(OPS[o][1], OPS[o][2]) for o in ops])
    batched = apply_step(images.to(device), ops, v)
    reference = torch.stack([apply_op_one(images[i], int(ops[i]), float(v[i])) for i in range(B)])
    assert _max_diff(batched, reference) <= (0 if device == "cpu" else 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [32, 48, 112])
def test_weak_and_cutout_batched_equal_per_sample(size: int, device: str) -> None:
    images = _images(size)
    params = draw_view_params(np.arange(B) * 101, 1, size, 0, 0.5)
    weak = weak_batch(images.to(device), params.flip, params.crop, params.pad)
    cut = cutout_batch(images.to(device), params.cutout)
    for i in range(B):
        flip, (left, top) = bool(params.flip[i]), params.crop[i].tolist()
        assert torch.equal(weak[i].cpu(), weak_one(images[i], flip, left, top, params.pad))
        assert torch.equal(cut[i].cpu(), cutout_one(images[i], *params.cutout[i].tolist()))


@pytest.mark.parametrize("device", DEVICES)
def test_whole_views_batched_equal_per_sample(device: str) -> None:
    size, n = 48, 150  # more than one CPU chunk of 64
    images = _images(size, n)
    seeds = np.arange(n, dtype=np.int64) * 7 + 3
    for k, (n_ops, cutout) in enumerate([(0, None), (3, 0.5), (2, 0.25)]):
        params = draw_view_params(seeds, k, size, n_ops, cutout)
        batched = apply_view(images.to(device), params).cpu()
        reference = torch.stack([apply_view_one(images[i], params, i) for i in range(n)])
        if device == "cpu":
            assert torch.equal(batched, reference)
        else:
            # One grey level from a colour op can move a later Posterize/Solarize/Equalize
            # bin: compare per image, most must be identical.
            same = (batched == reference).flatten(1).all(1).float().mean()
            assert same > 0.9


def test_cutout_mask_used_on_gpus_equals_the_cpu_fill() -> None:
    images = _images(48)
    params = draw_view_params(np.arange(B) * 13, 1, 48, 0, 0.5)
    edges = _cutout_edges(params.cutout.numpy(), 48)
    fill = torch.tensor(CUTOUT_FILL, dtype=torch.uint8).view(-1, 1, 1)
    masked = torch.where(cutout_mask(edges, images.shape[-2:], images.device), fill, images)
    assert torch.equal(masked, cutout_batch(images, params.cutout))


def test_apply_view_rejects_mismatched_batches() -> None:
    params = draw_view_params(np.arange(4), 0, 32, 0, None)
    with pytest.raises(ValueError, match="uint8"):
        apply_view(torch.zeros(4, 3, 32, 32), params)
    with pytest.raises(ValueError, match="view parameters"):
        apply_view(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), params)
