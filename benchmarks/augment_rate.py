"""Data-path rate of the unlabelled stream (weak + strong view per sample), one CPU thread.

Compares, on the same in-memory uint8 images (as the decoded cache holds them):

* ``per-sample torchvision``: ``policy=torchvision``, each sample augmented in the loader
  (torchvision v2 transforms under a per-sample seeded generator) — the path before batching;
* ``per-sample usb``: USB's policy through the per-sample reference (``apply_view_one``);
* ``batched usb``: the loader gathers rows and draws parameters, ``Batch.device_views`` applies
  both views to the whole batch (here on the CPU) — the training path.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/augment_rate.py [--sizes 48 112] [--batch 448]
[--per-op]``. Prints samples/s per path and the batched/per-sample ratio; ``--per-op`` also
prints the batched cost of each op (µs per image, every image of a 64-image chunk drawing it).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from harness.data.augment import apply_step, weak_batch
from harness.data.randaugment import OPS, StrongPolicy, apply_view_one, draw_view_params
from harness.data.streams import BatchStream, StreamSpec

USB = StrongPolicy(policy="usb", ops=3, magnitude=10, cutout=0.5)
TORCHVISION = StrongPolicy(policy="torchvision", ops=2, magnitude=10, cutout=0.5)


def _stream(images: np.ndarray, batch: int, strong: StrongPolicy) -> BatchStream:
    spec = StreamSpec("unlabelled", np.arange(len(images)), batch, ("weak", "strong"), seed=0)
    return BatchStream(images, np.zeros(len(images), dtype=np.int64), spec, images.shape[1], strong)


def _rate(step, samples_per_call: int, min_seconds: float) -> float:
    """Samples/s of ``step()`` over at least ``min_seconds`` (after one warm-up call)."""
    step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or calls < 2:
        step()
        calls += 1
    return calls * samples_per_call / elapsed


def measure(size: int, batch: int, min_seconds: float) -> dict[str, float]:
    """Samples/s of the three paths at ``size`` px."""
    images = np.random.default_rng(0).integers(0, 256, (2048, size, size, 3), dtype=np.uint8)
    torchvision_stream = _stream(images, batch, TORCHVISION)
    usb_stream = _stream(images, batch, USB)
    chw = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).contiguous()
    seeds = np.arange(64, dtype=np.int64)

    def per_sample_usb() -> None:
        weak = draw_view_params(seeds, 0, size, 0, None)
        strong = draw_view_params(seeds, 1, size, USB.ops, USB.cutout)
        for i in range(len(seeds)):
            apply_view_one(chw[i], weak, i)
            apply_view_one(chw[i], strong, i)

    return {
        "per-sample torchvision": _rate(
            lambda: next(torchvision_stream).device_views("cpu"), batch, min_seconds
        ),
        "per-sample usb": _rate(per_sample_usb, len(seeds), min_seconds),
        "batched usb": _rate(lambda: next(usb_stream).device_views("cpu"), batch, min_seconds),
    }


def per_op(size: int, min_seconds: float) -> dict[str, float]:
    """µs per image of the weak view and of each op, batched over a 64-image chunk."""
    n = 64
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    weak = draw_view_params(np.arange(n), 0, size, 0, None)
    costs = {
        "weak view": 1e6
        / _rate(lambda: weak_batch(images, weak.flip, weak.crop, weak.pad), 1, min_seconds)
        / n
    }
    for op, (name, low, high) in enumerate(OPS):
        ops, v = np.full(n, op), rng.uniform(low, high, n)
        costs[name] = (
            1e6 / _rate(lambda ops=ops, v=v: apply_step(images, ops, v), 1, min_seconds) / n
        )
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 112])
    parser.add_argument("--batch", type=int, default=448, help="unlabelled batch (64 × μ=7)")
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per path")
    parser.add_argument("--per-op", action="store_true", help="also time each op, batched")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    for size in args.sizes:
        rates = measure(size, args.batch, args.seconds)
        for name, rate in rates.items():
            print(f"{size:4d} px  {name:24s} {rate:8.0f} samples/s")
        ratio = rates["batched usb"] / rates["per-sample torchvision"]
        print(f"{size:4d} px  batched usb / per-sample torchvision: {ratio:.1f}x")
        if args.per_op:
            for name, cost in per_op(size, args.seconds / 5).items():
                print(f"{size:4d} px  {name:24s} {cost:8.0f} us/image")


if __name__ == "__main__":
    main()
