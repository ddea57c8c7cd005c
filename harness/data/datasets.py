"""From a dataset config to images in memory: pick the loader, generate synthfer, use the cache."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.affectnet import load_affectnet
from harness.data.cache import decoded_images
from harness.data.folder import load_class_folders
from harness.data.images import LazyImages
from harness.data.rafdb import load_rafdb
from harness.data.synthfer import SynthConfig, ensure_synthfer
from harness.data.table import AFFECTNET_CLASSES, RAFDB_CLASSES, FERDataset, ImageTable
from harness.errors import ConfigError


def cache_dir(data_cfg: dict[str, Any]) -> Path:
    """``data.cache_dir``, else ``$FER_BENCH_CACHE``, else ``~/.cache/fer-bench``."""
    chosen = data_cfg.get("cache_dir") or os.environ.get("FER_BENCH_CACHE")
    return Path(chosen or Path.home() / ".cache" / "fer-bench").expanduser()


def load_dataset(cfg: dict[str, Any]) -> FERDataset:
    """The dataset a run config names; synthfer is generated into the cache on first use."""
    ds = cfg["dataset"]
    kind, name = ds["kind"], ds["name"]
    root = Path(ds["root"]).expanduser() if ds.get("root") else None
    if name == "synthfer" and root is None:
        root = ensure_synthfer(cache_dir(cfg["data"]), SynthConfig(**ds["generate"]))
    if root is None:
        raise ConfigError(f"dataset {name}: set dataset.root=/path/to/{name}")
    if kind == "rafdb":
        return load_rafdb(root, layout=ds["layout"], name=name)
    if kind == "affectnet":
        return load_affectnet(
            root, num_classes=int(ds["num_classes"]), crop=str(ds["crop"]), name=name
        )
    if kind == "folder":
        return load_class_folders(root, name=name)
    raise ConfigError(f"dataset.kind={kind!r}: choose rafdb, affectnet or folder")


def config_classes(ds: dict[str, Any]) -> tuple[str, ...] | None:
    """The class names, in order, of the dataset a ``dataset`` config block names, where the
    config alone tells (RAF-DB's seven, AffectNet's first ``num_classes``); None for class
    folders, whose classes only the folder can tell."""
    if ds["kind"] == "rafdb":
        return RAFDB_CLASSES
    if ds["kind"] == "affectnet":
        return AFFECTNET_CLASSES[: int(ds["num_classes"])]
    return None


def split_images(
    table: ImageTable, split: str, dataset: FERDataset, cfg: dict[str, Any]
) -> Sequence[np.ndarray]:
    """The decoded images of one split at the training resolution: cached or decoded lazily."""
    size = int(cfg["data"]["image_size"])
    if not cfg["data"]["cache"]:
        return LazyImages(table, size)
    return decoded_images(
        table,
        size,
        cache_dir(cfg["data"]),
        key=f"{dataset.name}-{split}",
        workers=max(1, int(cfg["data"]["num_workers"])),
    )
