"""Augmentations, resumable training streams and in-order evaluation batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.randaugment import StrongPolicy
from harness.data.streams import Batch, BatchStream, StreamSpec, epoch_plan, eval_batches
from harness.data.transforms import MEAN, STD, strong_view, to_model_input, weak_view
from harness.errors import ConfigError

N, SIZE = 40, 16
USB = StrongPolicy(policy="usb", ops=3, magnitude=10, cutout=0.5)
TORCHVISION = StrongPolicy(policy="torchvision", ops=2, magnitude=10, cutout=0.5)


def _stream(*args, strong: StrongPolicy = USB, **kw) -> BatchStream:
    return BatchStream(*args, strong=strong, **kw)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture
def targets() -> np.ndarray:
    return np.arange(N) % 4


def _spec(**kw) -> StreamSpec:
    base = dict(
        name="unlabelled",
        subset=np.arange(5, 35),  # 30 samples: batches of 8 cross the epoch end at batch 4
        batch_size=8,
        views=("weak", "strong"),
    )
    return StreamSpec(**{**base, **kw})


def _take(stream: BatchStream, k: int) -> list[Batch]:
    return [next(stream) for _ in range(k)]


def _assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.indices, y.indices)
        assert torch.equal(x.targets, y.targets)
        vxs, vys = x.device_views("cpu"), y.device_views("cpu")
        assert len(vxs) == len(vys)
        for vx, vy in zip(vxs, vys, strict=True):
            assert torch.equal(vx, vy)


def test_same_spec_gives_identical_batches(images, targets):
    a = _take(_stream(images, targets, _spec(), SIZE), 3)
    b = _take(_stream(images, targets, _spec(), SIZE), 3)
    _assert_same(a, b)


@pytest.mark.parametrize("change", [{"seed": 1}, {"name": "labelled"}])
def test_different_seed_or_name_differ(images, targets, change):
    a = next(_stream(images, targets, _spec(), SIZE))
    b = next(_stream(images, targets, _spec(**change), SIZE))
    assert not torch.equal(a.indices, b.indices)
    assert not torch.equal(a.device_views("cpu")[0], b.device_views("cpu")[0])


@pytest.mark.parametrize(("workers_a", "workers_b"), [(0, 0), (2, 2), (2, 0)])
@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("strong", [USB, TORCHVISION], ids=["usb", "torchvision"])
def test_resume_is_bit_identical_across_epoch_boundary(
    images, targets, workers_a, workers_b, balanced, strong
):
    # 10 samples in batches of 4: the third batch takes 2 from epoch 0 and 2 from epoch 1.
    spec = _spec(balanced=balanced, subset=np.arange(3, 13), batch_size=4)
    reference = _take(_stream(images, targets, spec, SIZE, strong=strong), 4)

    a = _stream(images, targets, spec, SIZE, num_workers=workers_a, strong=strong)
    _assert_same(_take(a, 2), reference[:2])
    state = a.state_dict()
    # Workers have prefetched further; the state counts only what was returned.
    assert state == {"epoch": 0, "position": 8}
    assert all(type(v) is int for v in state.values())

    b = _stream(images, targets, spec, SIZE, num_workers=workers_b, strong=strong)
    next(b)  # b has moved on elsewhere; loading must override that
    b.load_state_dict(state)
    _assert_same(_take(b, 2), reference[2:])
    _assert_same(_take(a, 2), reference[2:])
    assert b.state_dict() == {"epoch": 1, "position": 6}
    a.close()
    b.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_views_applied_in_the_loader_equal_views_applied_later(images, targets, workers):
    # CPU training applies the batched views in the loader's workers; a GPU run applies them
    # on the device: the same bits, whatever the worker count.
    later = _take(_stream(images, targets, _spec(), SIZE), 3)
    spec = _spec()
    in_loader = _stream(images, targets, spec, SIZE, num_workers=workers, views_in_loader=True)
    batches = _take(in_loader, 3)
    assert all(b.images is None and len(b.views) == 2 for b in batches)
    _assert_same(batches, later)
    in_loader.close()


def test_batch_larger_than_subset_spans_epochs(images, targets):
    spec = _spec(subset=np.arange(5), batch_size=8)
    stream = _stream(images, targets, spec, SIZE)
    first = next(stream)
    assert stream.state_dict() == {"epoch": 1, "position": 3}
    assert sorted(first.indices[:5].tolist()) == [0, 1, 2, 3, 4]
    expected = next(stream)
    resumed = _stream(images, targets, spec, SIZE)
    resumed.load_state_dict({"epoch": 1, "position": 3})
    _assert_same([next(resumed)], [expected])


def test_indices_targets_and_pixels_match_subset(targets):
    # Each image is one flat colour, so flip + reflect-padded crop leaves it unchanged and the
    # weak view tells which image a sample came from.
    flat = np.repeat(np.arange(N, dtype=np.uint8)[:, None, None, None] * 5, SIZE, axis=1)
    flat = np.ascontiguousarray(np.broadcast_to(flat, (N, SIZE, SIZE, 3)))
    subset = np.arange(2, 34)  # 32 positions: exactly 4 batches per epoch
    stream = _stream(flat, targets, _spec(subset=subset, views=("weak",)), SIZE)
    seen = []
    for batch in _take(stream, 4):
        assert batch.indices.dtype == torch.int64 and batch.targets.dtype == torch.int64
        image_index = subset[batch.indices.numpy()]
        assert torch.equal(batch.targets, torch.as_tensor(targets[image_index]))
        colours = torch.as_tensor(image_index * 5, dtype=torch.uint8)
        assert torch.equal(
            batch.device_views("cpu")[0], colours[:, None, None, None].expand(-1, 3, SIZE, SIZE)
        )
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(len(subset)))  # one epoch = each position once
    assert stream.state_dict() == {"epoch": 1, "position": 0}


def test_balanced_sampling_equalises_classes(images):
    labels = np.zeros(N, dtype=np.int64)
    labels[30:36], labels[36:] = 1, 2  # subset holds 30 / 6 / 4 samples of classes 0 / 1 / 2
    spec = _spec(balanced=True, subset=np.arange(N))
    draws = np.concatenate([epoch_plan(spec, labels, e)[0] for e in range(30)])
    fractions = np.bincount(labels[draws], minlength=3) / len(draws)
    assert np.allclose(fractions, 1 / 3, atol=0.05)
    # The stream itself follows the plan: its first batch is the plan's first 8 positions.
    batch = next(_stream(images, labels, spec, SIZE))
    assert batch.indices.tolist() == epoch_plan(spec, labels, 0)[0][:8].tolist()
    # Unbalanced, the same subset keeps its 30:6:4 proportions.
    plain = epoch_plan(_spec(subset=np.arange(N)), labels, 0)[0]
    assert np.bincount(labels[plain]).tolist() == [30, 6, 4]


def test_weak_and_strong_views_shape_dtype_and_differ(images, targets):
    batch = next(_stream(images, targets, _spec(), SIZE))
    weak, strong = batch.device_views("cpu")
    for view in (weak, strong):
        assert view.shape == (8, 3, SIZE, SIZE) and view.dtype == torch.uint8
    assert not torch.equal(weak, strong)


def test_stream_leaves_global_rng_untouched(images, targets):
    stream = _stream(images, targets, _spec(), SIZE)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    next(stream)
    assert torch.equal(torch.get_rng_state(), state)


def test_torchvision_policy_cutout_erases_one_gray_square():
    image = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)  # flat: the weak part keeps it zero
    torch.manual_seed(0)
    out = strong_view(SIZE, ops=0, magnitude=10, cutout=0.5)(image)
    assert (out == 127).all(dim=0).sum() == (SIZE // 2) ** 2
    assert ((out == 0) | (out == 127)).all()


def test_weak_view_is_a_shifted_or_flipped_crop():
    image = torch.arange(SIZE * SIZE, dtype=torch.int64).reshape(1, SIZE, SIZE)
    image = (image % 251).to(torch.uint8).expand(3, -1, -1).contiguous()
    outs = [weak_view(SIZE)(image) for _ in range(20)]
    assert all(o.shape == image.shape for o in outs)
    assert any(not torch.equal(o, image) for o in outs)


def test_eval_batches_cover_every_image_in_order(images, targets):
    batches = list(eval_batches(images, targets, batch_size=16))
    assert [len(t) for _, t in batches] == [16, 16, 8]
    got = torch.cat([x for x, _ in batches])
    assert got.dtype == torch.uint8
    assert torch.equal(got, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert torch.cat([t for _, t in batches]).tolist() == targets.tolist()


def test_to_model_input_normalises_and_sets_memory_format():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = to_model_input(x, torch.device("cpu"), channels_last=True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (x.float() / 255 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = to_model_input(x, torch.device("cpu"))
    assert plain.is_contiguous() and torch.equal(plain, out)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(x.float(), torch.device("cpu"))


def test_bad_spec_and_state_are_rejected(images, targets):
    with pytest.raises(ConfigError, match="views"):
        _spec(views=("weak", "medium"))
    with pytest.raises(ConfigError, match="batch_size"):
        _spec(batch_size=0)
    with pytest.raises(ConfigError, match="subset"):
        _spec(subset=np.array([], dtype=np.int64))
    with pytest.raises(ConfigError, match="subset indices"):
        _stream(images, targets, _spec(subset=np.array([0, N])), SIZE)
    stream = _stream(images, targets, _spec(), SIZE)
    with pytest.raises(ValueError, match="another split"):
        stream.load_state_dict({"epoch": 0, "position": 30})
    with pytest.raises(ValueError, match="epoch"):
        stream.load_state_dict({"position": 3})
