"""Metrics, confusion matrices, text and PNG reports."""
from .metrics import classification_report, confusion_matrix, format_confusion, format_report
from .plots import plot_confusion, plot_history

__all__ = ["classification_report", "confusion_matrix", "format_confusion", "format_report",
           "plot_confusion", "plot_history"]
