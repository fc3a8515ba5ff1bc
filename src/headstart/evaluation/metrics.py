"""Classification metrics (computed in training/metrics.py, where a run's validation report
uses them) and their text forms for the command line."""
from __future__ import annotations

import numpy as np

from ..training.metrics import classification_report, confusion_matrix

__all__ = ["classification_report", "confusion_matrix", "format_confusion", "format_report"]


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
