"""Label protocols (``--labels``) and the labelled split they define.

Five forms, as in the semi-supervised FER literature:

* ``10%`` — a fraction of the training set, stratified per class: ``round(f·n_c)`` images of
  class c (Python rounding, half to even), at least 1 and at most ``n_c``; ``100%`` is every image;
* ``4000`` — a total count, class-balanced by water-filling: every class gets the same number
  q, or all it has if that is fewer, with q as large as the total allows; the images left over
  (fewer than the number of classes that still have some) add one each to those classes in
  class-index order. On RAF-DB, ``4000`` gives Fear all its 281 and the other six 619 or 620
  (Ada-CM capped Fear at 250 by hand: that split is ``adacm:4000``);
* ``25/class`` — ``min(25, n_c)`` images of every class;
* ``adacm:4000`` (and ``adacm:100/400/1000/2000``) — Ada-CM's published RAF-DB split (Li et al.,
  CVPR 2022; the table in github.com/hangyu94/Ada-CM's README.md): Fear 10/40/100/200/250 and
  every other class 15/60/150/300/625 images. Only for a dataset with RAF-DB's seven classes;
* ``perclass:10/15/15/15/15/15/15`` — an explicit count for each class, in the dataset's class
  order (slashes, not commas: a comma separates label settings).

Which images: for class c, the first k of a permutation of that class's (sorted) indices drawn
from ``np.random.default_rng([seed, c])``. The subset is therefore a pure function of (training
labels, protocol, seed) — every method gets the same images for the same seed — and subsets are
nested as the amount grows (10% ⊂ 25% for one seed; adacm:100 ⊂ adacm:400 ⊂ ... ⊂ adacm:4000,
as every class's count grows with the total).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from harness.errors import LabelProtocolError

FORMS = (
    "expected one of: a fraction of the training set like 10% or 0.5% (stratified per class), "
    "a total count like 4000 (class-balanced), a count per class like 25/class, a published "
    "split like adacm:4000, or one count for each class like perclass:10/15/15/15/15/15/15"
)
_FRACTION = re.compile(r"(\d+(?:\.\d+)?)%")
_TOTAL = re.compile(r"\d+")
_PER_CLASS = re.compile(r"(\d+)/class")
_PUBLISHED = re.compile(r"([a-z_]+):(\d+)")
_EXPLICIT = re.compile(r"perclass:(\d+(?:/\d+)*)")
# Explicit and published splits sort beside totals of the same size.
_KIND_ORDER = {"per_class": 0, "total": 1, "class_counts": 1, "fraction": 2}


@dataclass(frozen=True)
class PublishedSplit:
    """A split a paper published: how many labelled images each class gets, per total."""

    short: str  # how the plan table names it
    source: str  # where the counts come from
    classes: tuple[str, ...]  # the class order the counts follow (the dataset's must match)
    counts: dict[int, tuple[int, ...]]  # total -> count per class, in ``classes`` order


_RAFDB = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")


def _fear_and_others(fear: int, others: int) -> tuple[int, ...]:
    return tuple(fear if name == "Fear" else others for name in _RAFDB)


PUBLISHED_SPLITS = {
    # github.com/hangyu94/Ada-CM, README.md "Dataset setup" table (Fear 10/40/100/200/250,
    # Others 15/60/150/300/625). Its code (dataset/raf.py, data_split, lines 51-62) implements
    # only the 4000 column: Fear (class index 1) 250, every other class int((n - 250) / 6).
    "adacm": PublishedSplit(
        "Ada-CM's published split",
        "Ada-CM (Li et al., CVPR 2022), github.com/hangyu94/Ada-CM README.md",
        _RAFDB,
        {
            100: _fear_and_others(10, 15),
            400: _fear_and_others(40, 60),
            1000: _fear_and_others(100, 150),
            2000: _fear_and_others(200, 300),
            4000: _fear_and_others(250, 625),
        },
    ),
}


@dataclass(frozen=True)
class LabelProtocol:
    """A parsed ``--labels`` value; ``text`` is its canonical spelling (``10%``, ``25/class``)."""

    kind: str  # "fraction" | "total" | "per_class" | "class_counts"
    value: float | int  # fraction in (0, 1], or a count (class_counts: their total)
    text: str
    counts: tuple[int, ...] = ()  # class_counts: the count of each class, in class order
    classes: tuple[str, ...] = ()  # class_counts of a published split: the classes it names

    @property
    def sort_key(self) -> tuple[int, float]:
        """Order for table columns: per-class counts, then totals, then fractions, by size."""
        return (_KIND_ORDER[self.kind], float(self.value))


def _malformed(text: str, why: str) -> LabelProtocolError:
    return LabelProtocolError(f"cannot read --labels {text!r}: {why}; {FORMS}")


def parse_protocol(text: str) -> LabelProtocol:
    """Parse one label protocol (``10%``, ``0.5%``, ``100%``, ``4000``, ``25/class``,
    ``adacm:4000``, ``perclass:10/15/15/15/15/15/15``).

    Raises :class:`LabelProtocolError` naming the accepted forms for anything else.
    """
    raw = text.strip()
    if match := _FRACTION.fullmatch(raw):
        percent = float(match[1])
        if not 0 < percent <= 100:
            raise _malformed(text, "a fraction must be more than 0% and at most 100%")
        canonical = np.format_float_positional(percent, trim="-")
        return LabelProtocol("fraction", percent / 100, f"{canonical}%")
    if _TOTAL.fullmatch(raw):
        total = int(raw)
        if total < 1:
            raise _malformed(text, "a total must be at least 1")
        return LabelProtocol("total", total, str(total))
    if match := _PER_CLASS.fullmatch(raw):
        per_class = int(match[1])
        if per_class < 1:
            raise _malformed(text, "a count per class must be at least 1")
        return LabelProtocol("per_class", per_class, f"{per_class}/class")
    if match := _EXPLICIT.fullmatch(raw):
        counts = tuple(int(n) for n in match[1].split("/"))
        if sum(counts) < 1:
            raise _malformed(text, "the counts must add up to at least 1")
        canonical = "/".join(map(str, counts))
        return LabelProtocol("class_counts", sum(counts), f"perclass:{canonical}", counts)
    if match := _PUBLISHED.fullmatch(raw):
        name, total = match[1], int(match[2])
        if name not in PUBLISHED_SPLITS:
            known = ", ".join(f"{n}:N" for n in PUBLISHED_SPLITS)
            raise _malformed(text, f"no published split named {name!r} (known: {known})")
        split = PUBLISHED_SPLITS[name]
        if total not in split.counts:
            sizes = "/".join(map(str, split.counts))
            raise _malformed(text, f"{split.source} publishes {name}:{sizes} only")
        return LabelProtocol(
            "class_counts", total, f"{name}:{total}", split.counts[total], split.classes
        )
    raise _malformed(text, "not a label protocol")


def parse_protocols(text: str) -> list[LabelProtocol]:
    """Parse a comma list such as ``1%,10%,4000,25/class`` (order kept, duplicates dropped)."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise _malformed(text, "no label setting given")
    protocols: list[LabelProtocol] = []
    for part in parts:
        if not part:
            raise _malformed(text, "empty item in the comma list")
        protocol = parse_protocol(part)
        if protocol not in protocols:
            protocols.append(protocol)
    return protocols


def _water_fill(counts: np.ndarray, total: int) -> np.ndarray:
    """Class-balanced quotas summing to ``total``, each capped by the class's count."""
    # The common level q is the largest with sum(min(n_c, q)) <= total; that sum only grows
    # with q, so a binary search over [0, max n_c] finds it.
    low, high = 0, int(counts.max())
    while low < high:
        mid = (low + high + 1) // 2
        if int(np.minimum(counts, mid).sum()) <= total:
            low = mid
        else:
            high = mid - 1
    quotas = np.minimum(counts, low)
    leftover = total - int(quotas.sum())
    quotas[np.flatnonzero(counts > low)[:leftover]] += 1
    return quotas


def class_quotas(
    counts: np.ndarray, protocol: LabelProtocol, classes: Sequence[str] | None = None
) -> np.ndarray:
    """How many labelled images each class gets, given how many it has (``counts``).

    ``classes`` (the dataset's class names, in order) is checked against a published split's
    classes; an explicit or published split asking more of a class than it has is an error.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if protocol.kind == "class_counts":
        return _explicit_quotas(counts, protocol, classes)
    if protocol.kind == "fraction":
        # Decimal arithmetic: 7% of 100 must be 7, not round(7.000000000000001).
        fraction = Decimal(repr(float(protocol.value)))
        wanted = np.array([round(fraction * int(n)) for n in counts], dtype=np.int64)
        return np.minimum(np.maximum(wanted, 1), counts)
    if protocol.kind == "per_class":
        return np.minimum(counts, int(protocol.value))
    total = int(protocol.value)
    available = int(counts.sum())
    present = int((counts > 0).sum())
    if total > available:
        raise LabelProtocolError(
            f"--labels {protocol.text}: the training set has only {available} images; "
            "ask for at most that many, or 100% for all of them"
        )
    if total < present:
        raise LabelProtocolError(
            f"--labels {protocol.text}: fewer labels than classes ({present}); "
            "every class needs at least one labelled image"
        )
    return _water_fill(counts, total)


def check_split_classes(
    protocol: LabelProtocol, num_classes: int, classes: Sequence[str] | None = None
) -> None:
    """A ``perclass:`` or published split must give one count per class of the dataset
    (``num_classes``), and a published one be of the dataset's ``classes`` where known; a
    :class:`LabelProtocolError` otherwise. Other label settings pass."""
    if protocol.kind != "class_counts":
        return
    if len(protocol.counts) != num_classes:
        raise LabelProtocolError(
            f"--labels {protocol.text}: {len(protocol.counts)} counts for a dataset of "
            f"{num_classes} classes; give one count per class, in the dataset's class order"
        )
    if protocol.classes and classes is not None and tuple(classes) != protocol.classes:
        raise LabelProtocolError(
            f"--labels {protocol.text}: a split of the classes {'/'.join(protocol.classes)}; "
            f"this dataset's are {'/'.join(classes)}"
        )


def _explicit_quotas(
    counts: np.ndarray, protocol: LabelProtocol, classes: Sequence[str] | None
) -> np.ndarray:
    """The counts of a ``perclass:`` or published split, checked against the dataset."""
    wanted = np.asarray(protocol.counts, dtype=np.int64)
    check_split_classes(protocol, len(counts), classes)
    names = list(classes) if classes is not None else [f"class {i}" for i in range(len(counts))]
    for name, want, have in zip(names, wanted, counts, strict=True):
        if want > have:
            raise LabelProtocolError(
                f"--labels {protocol.text}: {name} has {have} training images, the split asks "
                f"for {want}"
            )
    return wanted


def labelled_split(
    targets: np.ndarray,
    protocol: LabelProtocol,
    seed: int,
    num_classes: int,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Sorted int64 indices of the labelled images: per class, the first k of a seeded
    permutation of that class's indices (see the module docstring). ``classes`` names the
    dataset's classes, for a published split to check."""
    targets = np.asarray(targets)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}); got {targets.min()}..{targets.max()}"
        )
    counts = np.bincount(targets, minlength=num_classes)
    quotas = class_quotas(counts, protocol, classes)
    chosen = [np.empty(0, dtype=np.int64)]
    for cls in range(num_classes):
        members = np.flatnonzero(targets == cls)  # sorted, so the draw ignores input order quirks
        order = np.random.default_rng([seed, cls]).permutation(members)
        chosen.append(order[: quotas[cls]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_summary(
    indices: np.ndarray, targets: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, object]:
    """Size per class and a short hash of the sorted indices: enough to check that two runs
    used the same labelled images."""
    # Little-endian int64 bytes: the same hash on every machine.
    indices = np.sort(np.asarray(indices, dtype="<i8"))
    counts = np.bincount(np.asarray(targets)[indices], minlength=len(class_names))
    digest = hashlib.sha256(indices.tobytes()).hexdigest()[:16]
    return {
        "num_labelled": len(indices),
        "per_class": {name: int(n) for name, n in zip(class_names, counts, strict=True)},
        "hash": digest,
    }
