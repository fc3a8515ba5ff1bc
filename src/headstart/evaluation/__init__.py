"""Metrics, confusion matrices, text and PNG reports, the transfer indicators, the classic
arm and the verdict of `compare` and its report (report.json + report.html), zero-shot mapping
of source labels."""
from .classic import ClassicModel, fit_classic
from .metrics import classification_report, confusion_matrix, format_confusion, format_report
from .plots import plot_confusion, plot_history
from .report import write_report
from .zero_shot import map_source_labels

__all__ = ["ClassicModel", "fit_classic", "classification_report", "confusion_matrix",
           "format_confusion", "format_report", "plot_confusion", "plot_history", "write_report",
           "map_source_labels"]
