"""Metrics, confusion matrices, text and PNG reports, the transfer indicators and the compare
report (report.json + report.html), zero-shot mapping of source labels."""
from .metrics import classification_report, confusion_matrix, format_confusion, format_report
from .plots import plot_confusion, plot_history
from .report import write_report
from .zero_shot import map_source_labels

__all__ = ["classification_report", "confusion_matrix", "format_confusion", "format_report",
           "plot_confusion", "plot_history", "write_report", "map_source_labels"]
