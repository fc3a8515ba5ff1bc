"""Classification metrics in NumPy: accuracy, per-class precision/recall/F1, confusion matrix."""
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


def format_report(report: dict) -> str:
    classes = report["classes"]
    w = max(12, max(len(c) for c in classes) + 2)
    lines = [f"{'':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for c in classes:
        m = report["per_class"][c]
        lines.append(f"{c:<{w}}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}"
                     f"{m['support']:>10d}")
    lines.append("")
    lines.append(f"{'accuracy':<{w}}{'':>20}{report['accuracy']:>10.4f}{report['n']:>10d}")
    lines.append(f"{'macro f1':<{w}}{'':>20}{report['macro_f1']:>10.4f}")
    return "\n".join(lines)


def format_confusion(report: dict) -> str:
    classes, cm = report["classes"], np.asarray(report["confusion_matrix"])
    short = [c[:7] for c in classes]
    w = max(len(c) for c in classes) + 2
    cell = max(5, len(str(int(cm.max()))) + 1, max(len(s) for s in short) + 1)
    corner = "true \\ predicted" if w >= 17 else ""
    head = f"{corner:<{w}}"
    lines = [head + "".join(f"{s:>{cell}}" for s in short)]
    for c, row in zip(classes, cm):
        lines.append(f"{c:<{w}}" + "".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(lines)
