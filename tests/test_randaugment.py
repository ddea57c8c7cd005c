"""USB's strong view: parameter distributions, each op against USB's own PIL calls, Cutout."""

from __future__ import annotations

import numpy as np
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import pytest
import torch
from PIL import Image
from scipy import stats

from harness.config import compose_config
from harness.data.randaugment import (
    CUTOUT_FILL,
    OPS,
    StrongPolicy,
    apply_op_one,
    apply_view_one,
    cutout_box,
    cutout_one,
    draw_view_params,
    weak_one,
)
from harness.errors import ConfigError
from harness.spec import config_hash

SIZE = 48
SEEDS = np.arange(20_000, dtype=np.int64) * 7919 + 12345


# --- USB's ops, transcribed from semilearn/datasets/augmentation/randaugment.py (PIL) -----------
def _usb_op(img: Image.Image, name: str, v: float) -> Image.Image:
    if name == "AutoContrast":
        return PIL.ImageOps.autocontrast(img)
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return getattr(PIL.ImageEnhance, name)(img).enhance(v)
    if name == "Equalize":
        return PIL.ImageOps.equalize(img)
    if name == "Identity":
        return img
    if name == "Posterize":
        return PIL.ImageOps.posterize(img, max(1, int(v)))
    if name == "Rotate":
        return img.rotate(v)
    if name == "ShearX":
        return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))
    if name == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))
    if name == "Solarize":
        return PIL.ImageOps.solarize(img, v)
    if name == "TranslateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, v * img.size[0], 0, 1, 0))
    if name == "TranslateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * img.size[1]))
    raise AssertionError(name)


def _usb_cutout_abs(img: Image.Image, v: float, x0: float, y0: float) -> Image.Image:
    # USB's CutoutAbs with its np.random.uniform draws replaced by the given centre.
    w, h = img.size
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    x1 = min(w, x0 + v)
    y1 = min(h, y0 + v)
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (125, 123, 114))
    return img


def _images(n: int = 6) -> list[np.ndarray]:
    """Noise and smooth face-like images (colour ops behave differently on each)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        noise = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        if k % 2:
            yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
            base = np.stack([200 * xx + 30, 150 * yy + 50, 80 * (xx + yy) + 20], axis=-1)
            noise = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        out.append(noise)
    return out


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).contiguous()


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def strong() -> object:
    return draw_view_params(SEEDS, 1, SIZE, 3, 0.5)


def test_op_choice_is_uniform_with_replacement(strong):
    ops = strong.ops.numpy()
    counts = np.bincount(ops.ravel(), minlength=len(OPS))
    assert stats.chisquare(counts).pvalue > 1e-3
    # With replacement: the same op twice in one image happens (3 draws of 14: P ≈ 0.2).
    repeats = np.mean([len(set(row)) < 3 for row in ops])
    assert 0.17 < repeats < 0.24


@pytest.mark.parametrize("op", range(len(OPS)), ids=[name for name, _, _ in OPS])
def test_magnitudes_stay_in_range_and_cover_it(strong, op):
    _, low, high = OPS[op]
    values = strong.magnitudes.numpy()[strong.ops.numpy() == op]
    assert len(values) > 3000
    assert values.min() >= low and values.max() < high
    # Uniform over the whole range, not a fixed magnitude.
    assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 1e-3


def test_cutout_side_and_centre_distributions(strong):
    side, cx, cy = strong.cutout.numpy().T
    assert side.min() >= 0 and side.max() < 0.5 * SIZE
    assert stats.kstest(side, stats.uniform(0, 0.5 * SIZE).cdf).pvalue > 1e-3
    # USB's np.random.uniform(w) is uniform between 1 and w.
    for centre in (cx, cy):
        assert centre.min() > 1 and centre.max() <= SIZE
        assert stats.kstest(centre, stats.uniform(1, SIZE - 1).cdf).pvalue > 1e-3


def test_weak_parameters_flip_half_and_crop_uniform():
    weak = draw_view_params(SEEDS, 0, SIZE, 0, None)
    assert weak.ops.shape == (len(SEEDS), 0) and weak.cutout.shape == (len(SEEDS), 0)
    assert abs(weak.flip.float().mean().item() - 0.5) < 0.02
    pad = SIZE // 8
    for axis in range(2):
        counts = np.bincount(weak.crop[:, axis].numpy(), minlength=2 * pad + 1)
        assert len(counts) == 2 * pad + 1 and stats.chisquare(counts).pvalue > 1e-3


def test_cutout_zero_turns_cutout_off():
    params = draw_view_params(SEEDS[:10], 1, SIZE, 2, 0.0)
    assert params.cutout.shape == (10, 0) and params.ops.shape == (10, 2)


def test_parameters_are_a_pure_function_of_seed_and_view():
    seeds = SEEDS[:50]
    whole = draw_view_params(seeds, 1, SIZE, 3, 0.5)
    for i in (0, 17, 49):
        alone = draw_view_params(seeds[i : i + 1], 1, SIZE, 3, 0.5)
        for field in ("flip", "crop", "ops", "magnitudes", "cutout"):
            assert torch.equal(getattr(alone, field)[0], getattr(whole, field)[i])
    other_view = draw_view_params(seeds, 0, SIZE, 3, 0.5)
    assert not torch.equal(other_view.magnitudes, whole.magnitudes)


@pytest.mark.parametrize("op", range(len(OPS)), ids=[name for name, _, _ in OPS])
def test_each_op_matches_usb_pil_op(op):
    name, low, high = OPS[op]
    rng = np.random.default_rng(op)
    geometric = name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
    for image in _images():
        for v in (low, high - 1e-9, *rng.uniform(low, high, 4)):
            ours = _hwc(apply_op_one(_chw(image), op, float(v))).astype(int)
            usb = np.asarray(_usb_op(Image.fromarray(image), name, float(v))).astype(int)
            diff = np.abs(ours - usb)
            # Colour ops: torchvision rounds where PIL truncates (and vice versa): <= 1 level.
            assert diff.max() <= (0 if geometric else 1), (name, v)


def test_geometric_ops_follow_usb_conventions():
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[:, :4] = 255  # a bright band at the left edge
    x = _chw(image)
    # TranslateX by +0.25 moves content left: the band leaves, black enters on the right.
    moved = apply_op_one(x, OPS.index(("TranslateX", -0.3, 0.3)), 0.25)
    assert moved.sum() == 0
    # ShearX shears about the top-left corner (USB's PIL affine): row 0 stays put.
    sheared = apply_op_one(x, OPS.index(("ShearX", -0.3, 0.3)), 0.3)
    assert torch.equal(sheared[:, 0], x[:, 0]) and not torch.equal(sheared[:, -1], x[:, -1])
    # Rotate turns counter-clockwise about the centre: a dot above the centre moves left.
    dot = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    dot[:, 4, SIZE // 2] = 255
    rotated = apply_op_one(dot, OPS.index(("Rotate", -30.0, 30.0)), 30.0)
    ys, xs = torch.nonzero(rotated[0], as_tuple=True)
    assert len(xs) >= 1 and (xs < SIZE // 2 - 5).all() and (ys > 4).all()


def test_cutout_matches_usb_cutout_abs():
    rng = np.random.default_rng(1)
    image = _images(1)[0]
    for _ in range(300):
        side = rng.uniform(0, 0.5 * SIZE)
        cx, cy = SIZE + (1 - SIZE) * rng.random(2)
        ours = _hwc(cutout_one(_chw(image), side, cx, cy))
        usb = np.asarray(_usb_cutout_abs(Image.fromarray(image), side, cx, cy))
        assert np.array_equal(ours, usb), (side, cx, cy)


def test_cutout_box_shifts_at_top_left_and_clips_at_bottom_right():
    assert cutout_box(SIZE, 10.0, 2.0, 2.0) == (0, 11, 0, 11)  # int(10) + 1 pixels, shifted
    assert cutout_box(SIZE, 10.0, SIZE, SIZE) == (SIZE - 5, SIZE, SIZE - 5, SIZE)
    image = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    out = cutout_one(image, 10.0, 20.0, 30.0)
    assert (out == torch.tensor(CUTOUT_FILL).view(3, 1, 1)).all(0).sum() == 11 * 11


def test_weak_view_matches_numpy_reflect_pad_and_crop():
    image = _images(1)[0]
    pad = SIZE // 8
    padded = np.pad(image[:, ::-1], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    ours = _hwc(weak_one(_chw(image), True, 3, 9, pad))
    assert np.array_equal(ours, padded[9 : 9 + SIZE, 3 : 3 + SIZE])


def test_view_applies_weak_then_ops_then_cutout():
    params = draw_view_params(SEEDS[:20], 1, SIZE, 3, 0.5)
    for i, image in enumerate(_images(4)):
        x = _chw(image)
        expected = weak_one(x, bool(params.flip[i]), *params.crop[i].tolist(), params.pad)
        for op, v in zip(params.ops[i].tolist(), params.magnitudes[i].tolist(), strict=True):
            expected = apply_op_one(expected, op, v)
        expected = cutout_one(expected, *params.cutout[i].tolist())
        assert torch.equal(apply_view_one(x, params, i), expected)


def test_policy_is_validated_and_defaults_live_in_the_config():
    section = compose_config([])["data"]["strong_augment"]
    policy = StrongPolicy.from_config(section)
    assert (policy.policy, policy.ops, policy.cutout) == ("usb", 3, 0.5)
    with pytest.raises(ConfigError, match="policy='randaug'"):
        StrongPolicy.from_config({**section, "policy": "randaug"})
    with pytest.raises(ConfigError, match="ops=17"):
        StrongPolicy.from_config({**section, "ops": 17})
    with pytest.raises(ConfigError, match=r"strong_augment\.cutout is missing"):
        StrongPolicy.from_config({k: v for k, v in section.items() if k != "cutout"})
    # The policy is part of a run's identity.
    usb = compose_config([])
    tv = compose_config(["data.strong_augment.policy=torchvision"])
    assert config_hash(usb) != config_hash(tv)
