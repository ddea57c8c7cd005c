"""How many training images each class has, as cheaply as the dataset allows: what the plan
table needs to say how many images a label setting labels, before any image is decoded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import BenchError


@dataclass(frozen=True)
class ClassCounts:
    """Training images per class (``counts[i]`` of ``classes[i]``), or why they are unknown."""

    classes: tuple[str, ...]
    counts: tuple[int, ...]
    problem: str = ""


def train_class_counts(cfg: dict[str, Any]) -> ClassCounts:
    """The training split's class sizes for a run config.

    synthfer's labels are a pure function of its settings (no image is rendered); any other
    dataset's label tables are read (no image is opened). A dataset that cannot be read here
    (e.g. its folder exists only on the compute nodes) gives empty counts and the reason.
    """
    ds = cfg["dataset"]
    if ds["name"] == "synthfer" and not ds.get("root"):
        from harness.data.synthfer import split_labels
        from harness.data.table import RAFDB_CLASSES

        generate = ds["generate"]
        labels = split_labels(int(generate["train_size"]), int(generate["seed"]), "train")
        counts = np.bincount(labels, minlength=len(RAFDB_CLASSES))
        return ClassCounts(RAFDB_CLASSES, tuple(int(n) for n in counts))
    from harness.data.datasets import load_dataset

    try:
        dataset = load_dataset(cfg)
    except BenchError as err:
        return ClassCounts((), (), str(err))
    counts = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    return ClassCounts(dataset.classes, tuple(int(n) for n in counts))
