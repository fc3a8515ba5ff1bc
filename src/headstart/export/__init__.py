"""Export a trained classifier to ONNX (fp32, parity-checked against PyTorch; int8 for small
devices) and run exports with ONNX Runtime."""
from .exporter import FORMATS, TOLERANCE, ExportResult, export_run
from .runtime import MODEL_FILE, ExportedModel, exported_for, read_sidecar

__all__ = ["export_run", "ExportResult", "ExportedModel", "exported_for", "read_sidecar",
           "FORMATS", "TOLERANCE", "MODEL_FILE"]
