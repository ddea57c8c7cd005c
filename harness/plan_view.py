"""What a planned grid labels: the images each run's label setting picks, in total and per
class, for ``bench run``'s plan table (computed from the class sizes, before any training)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.data.census import ClassCounts, train_class_counts
from harness.errors import LabelProtocolError
from harness.labels import PUBLISHED_SPLITS, class_quotas, parse_protocol
from harness.spec import RunSpec


def protocol_meaning(text: str) -> str:
    """A label setting as the plan table shows it: a bare integer is a total, and says so."""
    protocol = parse_protocol(text)
    if protocol.kind == "total":
        return f"{protocol.value} labelled images in total"
    if protocol.classes:  # a published split: say whose
        return f"{protocol.text} ({PUBLISHED_SPLITS[protocol.text.split(':')[0]].short})"
    return protocol.text


@dataclass
class LabelledImages:
    """Labelled-image counts of a grid's runs; class sizes are read once per dataset config."""

    counts: dict[str, ClassCounts] = field(default_factory=dict)

    @property
    def problem(self) -> str:
        """Why some dataset's class sizes are unknown (empty when all are known)."""
        return "; ".join(sorted({c.problem for c in self.counts.values() if c.problem}))

    @property
    def per_class_header(self) -> str:
        """``per class (Sur/Fea/...)`` when every dataset of the grid has the same classes."""
        names = {c.classes for c in self.counts.values() if c.classes}
        if len(names) != 1:
            return "per class"
        (classes,) = names
        return f"per class ({'/'.join(name[:3] for name in classes)})"

    def cells(self, spec: RunSpec) -> tuple[str, str]:
        """(total, per class) labelled images of one run; ``?`` where the sizes are unknown."""
        known = self.counts[_dataset_key(spec)]
        if not known.counts:
            return "?", "?"
        try:
            quotas = class_quotas(list(known.counts), parse_protocol(spec.labels), known.classes)
        except LabelProtocolError as err:  # the run will fail and say so; the grid goes on
            return "none", str(err).split(": ", 1)[-1]
        return str(int(quotas.sum())), "/".join(str(int(q)) for q in quotas)


def labelled_images(specs: Sequence[RunSpec]) -> LabelledImages:
    """The class sizes of every dataset config the grid uses (one read per distinct config)."""
    images = LabelledImages()
    for spec in specs:
        key = _dataset_key(spec)
        if key not in images.counts:
            images.counts[key] = train_class_counts(spec.config)
    return images


def _dataset_key(spec: RunSpec) -> str:
    return json.dumps(spec.config["dataset"], sort_keys=True)
