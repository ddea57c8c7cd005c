"""Label protocols (``--labels``) and the labelled split they define.

Three forms, as in the semi-supervised FER literature:

* ``10%`` — a fraction of the training set, stratified per class (at least 1 per class);
* ``4000`` — a total count, class-balanced and capped by what each class has;
* ``25/class`` — a count per class (all of a class that has fewer).

The labelled subset is a pure function of (training labels, protocol, seed): every method gets
the same images for the same seed, and subsets are nested as the amount grows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from harness.errors import LabelProtocolError

_FORMS = "use a fraction like 10% (stratified), a total like 4000 (class-balanced) or 25/class"
_FRACTION = re.compile(r"^(\d+(?:\.\d+)?)%$")
_TOTAL = re.compile(r"^(\d+)$")
_PER_CLASS = re.compile(r"^(\d+)/class$")


@dataclass(frozen=True)
class LabelProtocol:
    """A parsed ``--labels`` value; ``text`` is its canonical spelling."""

    kind: str  # "fraction" | "total" | "per_class"
    value: float | int
    text: str

    @property
    def sort_key(self) -> tuple[int, float]:
        """Order for tables: per-class counts, then totals, then fractions, each by size."""
        return ({"per_class": 0, "total": 1, "fraction": 2}[self.kind], float(self.value))


def parse_protocol(text: str) -> LabelProtocol:
    """Parse one label protocol; anything else raises :class:`LabelProtocolError`."""
    raw = text.strip()
    if match := _FRACTION.match(raw):
        percent = float(match[1])
        if not 0 < percent <= 100:
            raise LabelProtocolError(f"--labels {text!r}: a fraction must be in (0%, 100%]")
        return LabelProtocol("fraction", percent / 100, f"{percent:g}%")
    if match := _TOTAL.match(raw):
        total = int(match[1])
        if total < 1:
            raise LabelProtocolError(f"--labels {text!r}: a total must be at least 1")
        return LabelProtocol("total", total, str(total))
    if match := _PER_CLASS.match(raw):
        per_class = int(match[1])
        if per_class < 1:
            raise LabelProtocolError(f"--labels {text!r}: a per-class count must be at least 1")
        return LabelProtocol("per_class", per_class, f"{per_class}/class")
    raise LabelProtocolError(f"cannot read --labels {text!r}: {_FORMS}")


def parse_protocols(text: str) -> list[LabelProtocol]:
    """Parse a comma list such as ``1%,10%,4000,25/class``."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise LabelProtocolError(f"--labels is empty: {_FORMS}")
    return [parse_protocol(p) for p in parts]


def class_quotas(counts: np.ndarray, protocol: LabelProtocol) -> np.ndarray:
    """How many labelled images each class gets, given how many it has."""
    counts = np.asarray(counts, dtype=np.int64)
    if protocol.kind == "fraction":
        wanted = np.rint(counts * float(protocol.value)).astype(np.int64)
        return np.clip(wanted, 1, counts) * (counts > 0)
    if protocol.kind == "per_class":
        return np.minimum(counts, int(protocol.value))
    total = int(protocol.value)
    available = int(counts.sum())
    present = int((counts > 0).sum())
    if total > available:
        raise LabelProtocolError(
            f"--labels {protocol.text}: the training set has only {available} images"
        )
    if total < present:
        raise LabelProtocolError(
            f"--labels {protocol.text}: fewer labels than classes ({present}); "
            "every class needs at least one"
        )
    # Water-filling: share the total equally among classes that still have images; classes
    # that run out are capped and their share goes to the others. The remainder goes to the
    # lowest class indices first (deterministic).
    quotas = np.zeros_like(counts)
    remaining = total
    while remaining > 0:
        open_classes = np.flatnonzero(quotas < counts)
        share, extra = divmod(remaining, len(open_classes))
        add = np.full(len(open_classes), share)
        add[:extra] += 1
        add = np.minimum(add, counts[open_classes] - quotas[open_classes])
        quotas[open_classes] += add
        remaining -= int(add.sum())
    return quotas


def labelled_split(
    targets: np.ndarray, protocol: LabelProtocol, seed: int, num_classes: int
) -> np.ndarray:
    """Sorted indices of the labelled images: per class, the first k of a seeded permutation."""
    targets = np.asarray(targets)
    counts = np.bincount(targets, minlength=num_classes)
    quotas = class_quotas(counts, protocol)
    chosen = []
    for cls in range(num_classes):
        members = np.flatnonzero(targets == cls)
        order = np.random.default_rng([seed, cls]).permutation(len(members))
        chosen.append(members[order[: quotas[cls]]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_summary(
    indices: np.ndarray, targets: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, object]:
    """Size per class and a hash of the indices: enough to check two runs used one split."""
    counts = np.bincount(np.asarray(targets)[indices], minlength=len(class_names))
    digest = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
    return {
        "num_labelled": len(indices),
        "per_class": {name: int(n) for name, n in zip(class_names, counts, strict=True)},
        "hash": digest,
    }
