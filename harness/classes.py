"""Expression classes by name: one vocabulary for RAF-DB, AffectNet and class-folder datasets,
and the mapping between a trained model's classes and a test set's.

Datasets order and spell their classes differently (RAF-DB: Surprise, Fear, Disgust, Happiness,
Sadness, Anger, Neutral; AffectNet: Neutral, Happiness, Sadness, Surprise, Fear, Disgust, Anger,
Contempt; folders: whatever the folder names say, e.g. ``happy``, ``Angry``). Two classes are the
same expression when their names normalise to the same canonical name (:func:`canonical`):
case, digits, spaces and punctuation are ignored and a fixed list of synonyms is accepted
(``happy`` → Happiness, ``angry`` → Anger, ...). Nothing else is guessed: a class whose name has
no counterpart on the other side is reported as such, never matched by position or similarity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import DatasetError

# Canonical expression (RAF-DB/AffectNet spelling) → the normalised spellings accepted for it.
# Adjective forms are what folder datasets (FER2013, CK+, ExpW copies) usually use.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Surprise": ("surprise", "surprised"),
    "Fear": ("fear", "fearful", "afraid", "scared"),
    "Disgust": ("disgust", "disgusted"),
    "Happiness": ("happiness", "happy", "joy"),
    "Sadness": ("sadness", "sad"),
    "Anger": ("anger", "angry"),
    "Neutral": ("neutral",),
    "Contempt": ("contempt", "contemptuous"),
}
_CANONICAL = {spelling: name for name, spellings in SYNONYMS.items() for spelling in spellings}


class ClassMappingError(DatasetError):
    """A model's classes and a test set's cannot be put in correspondence by name."""


def normalise(name: str) -> str:
    """``"3_Happy "`` → ``"happy"``: lower case, letters only."""
    return re.sub(r"[^a-z]", "", name.lower())


def canonical(name: str) -> str:
    """The canonical expression a class name denotes (``"angry"`` → ``"Anger"``), or the
    normalised name itself when it is not a known expression (it then matches only a class
    spelt the same way)."""
    key = normalise(name)
    return _CANONICAL.get(key, key)


@dataclass(frozen=True)
class ClassMapping:
    """Which model class each test class is.

    ``pairs`` holds ``(test index, model index)`` for every class both sides have, in the test
    set's class order. Test classes without a counterpart (``test_only``) have their images left
    out of the evaluation; model classes without one (``model_only``) can never be predicted
    (their logits are masked), since no test image could count them right or wrong fairly.
    """

    model_classes: tuple[str, ...]
    test_classes: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]

    @property
    def test_only(self) -> tuple[str, ...]:
        """Test classes the model was never trained on (their images are excluded)."""
        matched = {t for t, _ in self.pairs}
        return tuple(c for i, c in enumerate(self.test_classes) if i not in matched)

    @property
    def model_only(self) -> tuple[str, ...]:
        """Model classes the test set does not have (their logits are masked out)."""
        matched = {m for _, m in self.pairs}
        return tuple(c for i, c in enumerate(self.model_classes) if i not in matched)

    @property
    def evaluated_classes(self) -> tuple[str, ...]:
        """The test set's names of the shared classes, in the test set's order: the classes
        of the cross-dataset metrics."""
        return tuple(self.test_classes[t] for t, _ in self.pairs)

    def summary(self) -> dict[str, object]:
        """JSON-able description: matched names (test ↔ model), and the unmatched ones."""
        return {
            "matched": [
                {"test": self.test_classes[t], "model": self.model_classes[m]}
                for t, m in self.pairs
            ],
            "test_only": list(self.test_only),
            "model_only": list(self.model_only),
        }


def _by_canonical(classes: tuple[str, ...], side: str) -> dict[str, int]:
    """Canonical name → index; two classes naming one expression are an error (which of them
    a model class corresponds to would be a guess)."""
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        key = canonical(name)
        if key in index:
            raise ClassMappingError(
                f"{side} classes {classes[index[key]]!r} and {name!r} both name the expression "
                f"{key!r}; rename one of them"
            )
        index[key] = i
    return index


def map_classes(model_classes: tuple[str, ...], test_classes: tuple[str, ...]) -> ClassMapping:
    """Match classes by expression name (see :func:`canonical`), in the test set's order.

    Raises :class:`ClassMappingError` when no class matches, or when one side names an
    expression twice.
    """
    model_classes, test_classes = tuple(model_classes), tuple(test_classes)
    model_index = _by_canonical(model_classes, "model")
    test_index = _by_canonical(test_classes, "test set")
    pairs = tuple(
        (t, model_index[key])
        for key, t in sorted(test_index.items(), key=lambda kv: kv[1])
        if key in model_index
    )
    if not pairs:
        raise ClassMappingError(
            f"no class of the test set ({', '.join(test_classes)}) matches a class of the model "
            f"({', '.join(model_classes)}) by expression name; known names: "
            f"{', '.join(sorted(_CANONICAL))}"
        )
    return ClassMapping(model_classes, test_classes, pairs)
