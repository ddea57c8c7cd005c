"""Classification metrics on a hand-computed example."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from harness.metrics import classification_metrics

NAMES = ("a", "b", "c", "d")
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 1, 0, 2, 1])


def test_metrics_match_the_hand_computed_values() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert m["top1"] == 62.5  # 5 of 8
    # Recall: a 3/4, b 1/2, c 1/2; d has no test sample and is not averaged.
    assert m["mean_class_acc"] == pytest.approx(100 * (0.75 + 0.5 + 0.5) / 3, abs=1e-4)
    assert m["per_class_acc"] == {"a": 75.0, "b": 50.0, "c": 50.0, "d": None}
    # F1: a = 2·(3/4)(3/4)/(3/2) = 3/4; b: precision 1/3, recall 1/2 → 2/5;
    # c: precision 1, recall 1/2 → 2/3; d never predicted nor present → 0.
    assert m["macro_f1"] == pytest.approx(100 * (0.75 + 0.4 + 2 / 3 + 0) / 4, abs=1e-4)
    assert m["num_samples"] == 8


def test_confusion_matrix_has_every_class_rows_true() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert m["confusion_matrix"] == [
        [3, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ]


def test_mean_class_acc_is_balanced_accuracy() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    m = classification_metrics(y_true, y_pred, tuple("vwxyz"))
    assert m["mean_class_acc"] == pytest.approx(
        100 * balanced_accuracy_score(y_true, y_pred), abs=1e-4
    )
    assert m["mean_class_acc"] != m["top1"], "imbalanced test set: the two differ"


def test_metrics_are_plain_json() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert json.loads(json.dumps(m)) == m
    assert type(m["top1"]) is float and type(m["num_samples"]) is int
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="equal"):
        classification_metrics(Y_TRUE, Y_PRED[:-1], NAMES)
    with pytest.raises(ValueError, match="non-empty"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int), NAMES)
