"""Export a trained classifier to ONNX (fp32, parity-checked against PyTorch; int8 for small
devices) and run exports with ONNX Runtime. Names are imported when first read (_lazy.py), so
that `headstart export --help` needs neither torch nor ONNX Runtime."""
from .._lazy import attach

__getattr__, __dir__ = attach(__name__, {
    "FORMATS": "exporter", "TOLERANCE": "exporter", "ExportResult": "exporter",
    "export_run": "exporter", "MODEL_FILE": "runtime", "ExportedModel": "runtime",
    "exported_for": "runtime", "read_sidecar": "runtime"})

__all__ = ["export_run", "ExportResult", "ExportedModel", "exported_for", "read_sidecar",
           "FORMATS", "TOLERANCE", "MODEL_FILE"]
