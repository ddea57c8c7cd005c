"""Classification metrics as the FER literature reports them (scikit-learn underneath)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Top-1 (RAF-DB's headline), mean class accuracy (AffectNet's), macro-F1 (Aff-Wild2's),
    per-class accuracy and the confusion matrix (rows: true class). Percentages, plain JSON."""
    labels = list(range(len(class_names)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    present = support > 0
    per_class = np.divide(np.diag(matrix), support, out=np.zeros(len(labels)), where=present)
    return {
        "top1": round(100 * float(accuracy_score(y_true, y_pred)), 4),
        # Balanced accuracy over the classes the test set has.
        "mean_class_acc": round(100 * float(per_class[present].mean()), 4),
        "macro_f1": round(
            100 * float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            4,
        ),
        "per_class_acc": {
            name: round(100 * float(acc), 4)
            for name, acc in zip(class_names, per_class, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
        "num_samples": len(y_true),
    }
