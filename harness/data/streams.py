"""Infinite, exactly resumable batch streams for training, and in-order batches for evaluation.

All randomness of a stream is a pure function of ``(seed, stream name, epoch, position)``:

* the order of epoch ``e`` (a permutation of the subset, or class-balanced draws with
  replacement) and one augmentation seed per position both come from
  ``np.random.default_rng([seed, crc32(name), e])``;
* each sample's views are a pure function of its augmentation seed: the parameters of USB's
  policy (``data.strong_augment.policy=usb``) are drawn from the seed's SplitMix64 stream
  (:mod:`harness.data.randaugment`) when a batch is collated, and applied to the whole batch on
  the training device (:meth:`Batch.device_views`); torchvision's transforms
  (``policy=torchvision``) run per sample under ``torch.random.fork_rng`` after seeding torch's
  CPU generator with it. Neither the caller's RNG nor worker seeding matters.

A stream's state is therefore just ``(epoch, position)`` of the next sample it will return, and a
resumed stream yields bit-identical batches to an uninterrupted one, with or without workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.data.augment import apply_view
from harness.data.randaugment import StrongPolicy, ViewParams, draw_view_params
from harness.data.transforms import eval_view, strong_view, weak_view
from harness.errors import ConfigError
from harness.interrupts import ctrl_c_held

VIEW_NAMES = ("weak", "strong")

# One batch request from the sampler: (position within the subset, augmentation seed) per sample.
_Item = tuple[int, int]


@dataclass(frozen=True)
class StreamSpec:
    """What one training stream draws and how.

    ``subset`` holds indices into the stream's image array; batches report *positions* within
    it (0..len(subset)-1). ``name`` is part of the RNG key, so "labelled" and "unlabelled"
    streams with the same seed are independent.
    """

    name: str
    subset: np.ndarray
    batch_size: int
    views: tuple[str, ...]
    balanced: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        subset = np.asarray(self.subset)
        # Normalise once (frozen dataclass, hence object.__setattr__): a list works too.
        object.__setattr__(self, "subset", subset)
        object.__setattr__(self, "views", tuple(self.views))
        if subset.ndim != 1 or len(subset) == 0 or not np.issubdtype(subset.dtype, np.integer):
            raise ConfigError(
                f"stream {self.name!r}: subset must be a non-empty 1-D array of image indices, "
                f"got shape {subset.shape} of {subset.dtype}"
            )
        if self.batch_size < 1:
            raise ConfigError(
                f"stream {self.name!r}: batch_size must be >= 1, got {self.batch_size}"
            )
        if not self.views or any(v not in VIEW_NAMES for v in self.views):
            raise ConfigError(
                f"stream {self.name!r}: views must be a non-empty tuple of {VIEW_NAMES}, "
                f"got {self.views!r}"
            )
        if self.seed < 0:
            raise ConfigError(f"stream {self.name!r}: seed must be >= 0, got {self.seed}")


@dataclass
class Batch:
    """One training batch: int64 targets, int64 positions of the samples within
    ``spec.subset``, and its views (in ``spec.views`` order), read with :meth:`device_views`.

    Under USB's policy the loader only gathers the uint8 rows (``images``) and draws each view's
    per-sample parameters (``params``); :meth:`device_views` applies them batched on the
    training device (:mod:`harness.data.augment`). Under ``policy=torchvision`` the loader
    augments each sample and ``views`` holds the finished views.
    """

    views: list[torch.Tensor]
    targets: torch.Tensor
    indices: torch.Tensor
    images: torch.Tensor | None = None
    params: tuple[ViewParams, ...] = ()

    def device_views(self, device: torch.device | str) -> list[torch.Tensor]:
        """Every view as a uint8 B×3×H×W tensor on ``device`` (the uint8 rows move once)."""
        if self.images is None:
            return [v.to(device, non_blocking=True) for v in self.views]
        images = self.images.to(device, non_blocking=True)
        return [apply_view(images, p) for p in self.params]

    def pin_memory(self) -> Batch:
        """Page-locked copy; the DataLoader calls this when ``pin_memory=True``."""
        return Batch(
            views=[v.pin_memory() for v in self.views],
            targets=self.targets.pin_memory(),
            indices=self.indices.pin_memory(),
            images=None if self.images is None else self.images.pin_memory(),
            params=self.params,
        )


def epoch_plan(spec: StreamSpec, targets: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Order of subset positions and per-position augmentation seeds for one epoch of a stream.

    Returns ``(positions, aug_seeds)``, both of length ``len(spec.subset)``. Unbalanced: a
    permutation. Balanced: draws with replacement where each class present in
    ``targets[spec.subset]`` is equally likely and samples within a class are uniform.
    A pure function of ``(spec.seed, spec.name, epoch)`` (and the subset's labels).
    """
    rng = np.random.default_rng([spec.seed, zlib.crc32(spec.name.encode()), epoch])
    n = len(spec.subset)
    if spec.balanced:
        labels = np.asarray(targets)[spec.subset]
        # Positions grouped by class; counts/starts locate each class's block.
        by_class = np.argsort(labels, kind="stable")
        _, starts, counts = np.unique(labels[by_class], return_index=True, return_counts=True)
        cls = rng.integers(len(counts), size=n)
        within = rng.integers(counts[cls])
        positions = by_class[starts[cls] + within]
    else:
        positions = rng.permutation(n)
    # Drawn after the order so both come from one generator; 63 bits fit torch's seed range.
    aug_seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    return positions.astype(np.int64), aug_seeds


class _StreamBatchSampler:
    """Yields the remaining batches of a stream from ``(epoch, position)`` on, forever.

    A batch that would cross the end of an epoch takes the rest from the next one.
    """

    def __init__(self, spec: StreamSpec, targets: np.ndarray, epoch: int, position: int) -> None:
        self.spec, self.targets = spec, targets
        self.epoch, self.position = epoch, position

    def __iter__(self) -> Iterator[list[_Item]]:
        epoch, pos = self.epoch, self.position
        n, size = len(self.spec.subset), self.spec.batch_size
        positions, seeds = epoch_plan(self.spec, self.targets, epoch)
        while True:
            items: list[_Item] = []
            while len(items) < size:
                take = min(size - len(items), n - pos)
                chunk = slice(pos, pos + take)
                items.extend(zip(positions[chunk].tolist(), seeds[chunk].tolist(), strict=True))
                pos += take
                if pos == n:
                    epoch, pos = epoch + 1, 0
                    positions, seeds = epoch_plan(self.spec, self.targets, epoch)
            yield items


def _as_chw(image: Any) -> torch.Tensor:
    """One H×W×3 uint8 image (array-like) as a 3×H×W uint8 tensor."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 image, got {array.dtype} of shape {array.shape}")
    # Copy: memmaps and decoder buffers must not be shared with (or mutated by) transforms.
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()


class _StreamDataset(Dataset):
    """Map-style dataset whose keys are ``(subset position, augmentation seed)`` pairs; an item
    is ``(views, target, position, seed)``, its views the raw image alone without ``augment``."""

    def __init__(
        self,
        images: Sequence[Any],
        targets: np.ndarray,
        subset: np.ndarray,
        augment: Callable[[torch.Tensor, int], list[torch.Tensor]] | None,
    ) -> None:
        self.images, self.targets, self.subset = images, targets, subset
        self.augment = augment

    def __len__(self) -> int:
        return len(self.subset)

    def __getitem__(self, item: _Item) -> tuple[list[torch.Tensor], int, int, int]:
        position, aug_seed = item
        index = int(self.subset[position])
        image = _as_chw(self.images[index])
        views = [image] if self.augment is None else self.augment(image, aug_seed)
        return views, int(self.targets[index]), position, aug_seed


class _TorchvisionViews:
    """Views from torchvision transforms drawing from torch's global CPU generator, seeded per
    sample (``policy=torchvision``)."""

    def __init__(self, transforms: list[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.transforms = transforms

    def __call__(self, image: torch.Tensor, aug_seed: int) -> list[torch.Tensor]:
        # fork_rng restores the caller's CPU RNG afterwards (matters when num_workers=0).
        # Seed only the CPU generator: torch.manual_seed would also reseed CUDA's generators,
        # which fork_rng(devices=[]) does not restore.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(aug_seed)
            # Views are consecutive draws from one seeded generator: independent, deterministic.
            return [transform(image) for transform in self.transforms]


class _Collate:
    """Stack samples into a :class:`Batch`; under USB's policy, draw each view's parameters
    from the samples' seeds (vectorised) for :meth:`Batch.device_views` to apply — or apply
    them here, batched, with ``views_in_loader``."""

    def __init__(
        self, views: tuple[str, ...], size: int, strong: StrongPolicy | None, views_in_loader: bool
    ) -> None:
        self.views, self.size, self.strong = views, size, strong
        self.on_device = strong is None or strong.policy == "usb"
        self.views_in_loader = views_in_loader

    def __call__(self, samples: list[tuple[list[torch.Tensor], int, int, int]]) -> Batch:
        targets = torch.tensor([s[1] for s in samples], dtype=torch.int64)
        indices = torch.tensor([s[2] for s in samples], dtype=torch.int64)
        if not self.on_device:
            views = [torch.stack([s[0][v] for s in samples]) for v in range(len(samples[0][0]))]
            return Batch(views=views, targets=targets, indices=indices)
        seeds = np.array([s[3] for s in samples], dtype=np.int64)
        params = tuple(self._params(seeds, k, view) for k, view in enumerate(self.views))
        images = torch.stack([s[0][0] for s in samples])
        if self.views_in_loader:
            views = [apply_view(images, p) for p in params]
            return Batch(views=views, targets=targets, indices=indices)
        return Batch(views=[], targets=targets, indices=indices, images=images, params=params)

    def _params(self, seeds: np.ndarray, k: int, view: str) -> ViewParams:
        # Views are numbered: view k of a sample draws from its own block of the seed's stream.
        if view == "strong" and self.strong is not None:
            return draw_view_params(seeds, k, self.size, self.strong.ops, self.strong.cutout)
        return draw_view_params(seeds, k, self.size, 0, None)


class BatchStream:
    """An infinite, exactly resumable iterator of :class:`Batch` over one subset of images.

    ``images`` is anything indexable giving H×W×3 uint8 arrays at ``image_size`` (an (N, H, W, 3)
    array, a memmap, a lazy decoder). ``strong`` is the strong view's policy (required when
    ``spec.views`` has a strong view).
    Under USB's policy the loader gathers rows and draws parameters, and the views are applied
    batched where :meth:`Batch.device_views` is called; with ``views_in_loader`` (for CPU
    training, where the loader's worker processes are spare cores) the loader applies them,
    batched, itself — the same bits either way. Under ``policy=torchvision`` the loader
    augments each sample. With ``num_workers > 0`` the loader runs in DataLoader worker
    processes; the state still counts only batches returned to the caller, never what workers
    prefetched.
    """

    def __init__(
        self,
        images: Sequence[Any],
        targets: np.ndarray,
        spec: StreamSpec,
        image_size: int,
        strong: StrongPolicy | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        views_in_loader: bool = False,
    ) -> None:
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        subset = np.asarray(spec.subset)
        if subset.min() < 0 or subset.max() >= len(images):
            raise ConfigError(
                f"stream {spec.name!r}: subset indices must lie in 0..{len(images) - 1}, "
                f"got {subset.min()}..{subset.max()}"
            )
        self.images, self.targets, self.spec = images, np.asarray(targets), spec
        self.num_workers, self.pin_memory = num_workers, pin_memory
        if "strong" in spec.views and strong is None:
            raise ValueError("a stream with a strong view needs its StrongPolicy")
        self._collate = _Collate(spec.views, image_size, strong, views_in_loader)
        augment = (
            None if self._collate.on_device else _torchvision_views(spec.views, image_size, strong)
        )
        self._dataset = _StreamDataset(images, self.targets, subset, augment)
        self._epoch, self._position = 0, 0
        self._iter: Iterator[Batch] | None = None  # started lazily, so a resume costs no workers

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._iter is None:
            self._iter = _start(self._loader())
        batch = next(self._iter)
        # Advance by what was returned; a batch may wrap over one or more epoch ends.
        self._position += self.spec.batch_size
        n = len(self.spec.subset)
        self._epoch += self._position // n
        self._position %= n
        return batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position"}`` of the next sample this stream will return."""
        return {"epoch": int(self._epoch), "position": int(self._position)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict`; the next batch is the one that state's stream
        would have returned next."""
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"stream state must be {{'epoch': int, 'position': int}}, got {state!r}"
            ) from err
        if epoch < 0 or not 0 <= position < len(self.spec.subset):
            raise ValueError(
                f"stream {self.spec.name!r}: state {state!r} does not fit a subset of "
                f"{len(self.spec.subset)} samples (was the checkpoint made with another split?)"
            )
        self.close()
        self._epoch, self._position = epoch, position

    def close(self) -> None:
        """Stop worker processes (they restart on the next batch)."""
        self._iter = None  # dropping the DataLoader iterator shuts its workers down

    def _loader(self) -> DataLoader:
        sampler = _StreamBatchSampler(self.spec, self.targets, self._epoch, self._position)
        return DataLoader(
            self._dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            pin_memory=self.pin_memory,
            # Own generator: creating an iterator draws a base seed, which must not consume
            # the caller's global RNG (our augmentation never uses worker seeds anyway).
            generator=torch.Generator(),
        )


def _torchvision_views(
    views: tuple[str, ...], size: int, strong: StrongPolicy
) -> _TorchvisionViews:
    """The per-sample views of ``policy=torchvision``."""
    makers = {
        "weak": lambda: weak_view(size),
        "strong": lambda: strong_view(
            size, ops=strong.ops, magnitude=strong.magnitude, cutout=strong.cutout
        ),
    }
    return _TorchvisionViews([makers[v]() for v in views])


def _start(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``: its worker processes, if it has any, start with Ctrl-C held
    (:mod:`harness.interrupts`)."""
    if loader.num_workers == 0:
        return iter(loader)
    with ctrl_c_held():
        return iter(loader)


class _EvalDataset(Dataset):
    def __init__(self, images: Sequence[Any], targets: np.ndarray, transform: Callable | None):
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _as_chw(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def eval_batches(
    images: Sequence[Any],
    targets: np.ndarray,
    batch_size: int,
    num_workers: int = 0,
    image_size: int | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every image once, in order: ``(uint8 B×3×H×W, int64 targets)`` batches, the last one
    possibly smaller. With ``image_size``, images not at that size are resized to it."""
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if batch_size < 1:
        raise ConfigError(f"eval batch_size must be >= 1, got {batch_size}")
    transform = eval_view(image_size) if image_size is not None else None
    loader = DataLoader(
        _EvalDataset(images, np.asarray(targets), transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # keep the caller's global RNG untouched
    )
    for images_batch, targets_batch in _start(loader):
        yield images_batch, targets_batch.to(torch.int64)
