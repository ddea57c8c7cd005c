"""Classification metrics as the FER literature reports them (scikit-learn underneath)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

DIGITS = 4  # percentages rounded to 4 decimals: plenty for tables, stable JSON


def _percent(value: float) -> float:
    return round(100 * float(value), DIGITS)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Top-1 accuracy (RAF-DB's headline), mean class accuracy (AffectNet's), macro-F1
    (Aff-Wild2's), per-class accuracy and the confusion matrix, as plain JSON-able data.

    Percentages in [0, 100]. The confusion matrix has a row and column for every class in
    ``class_names`` (rows: true class, columns: prediction), present in the test set or not.
    Mean class accuracy is balanced accuracy: the mean recall over the classes the test set
    has; a class absent from it has no accuracy (``None``), which would otherwise read as 0%.
    Macro-F1 averages over every class (an absent class that is never predicted scores 0, as
    in scikit-learn with ``zero_division=0``).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(
            f"need two equal, non-empty 1-D label arrays; got {y_true.shape}, {y_pred.shape}"
        )
    labels = list(range(len(class_names)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(matrix), support, out=np.zeros(len(labels)), where=present)
    macro_f1 = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "top1": _percent(accuracy_score(y_true, y_pred)),
        "mean_class_acc": _percent(recall[present].mean()),
        "macro_f1": _percent(macro_f1),
        "per_class_acc": {
            name: _percent(acc) if has else None
            for name, acc, has in zip(class_names, recall, present, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
        "num_samples": int(y_true.size),
    }
