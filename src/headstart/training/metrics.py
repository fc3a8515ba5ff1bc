"""The figures a run reports on labelled data (its validation split; `evaluate`'s test data):
accuracy, per-class precision, recall, F1 and support, and the confusion matrix.

NumPy by hand, not scikit-learn's precision_recall_fscore_support: scikit-learn computes F1 as
2tp / (2tp + fp + fn), which differs in the last bit from the 2PR / (P + R) every recorded
figure was computed with (tested: the same to 1e-16; confusion matrices identical).
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """accuracy, macro/weighted averages and per-class precision, recall, F1, support."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(support.sum())
    present = support > 0
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                     "f1": float(f1[i]), "support": int(support[i])}
                 for i, c in enumerate(classes)}
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "n": n,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
