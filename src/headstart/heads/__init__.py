"""The new head that replaces a backbone's source classifier (backbones/head.py, where a source
model's own classifier is read too) and the model that joins them (model.py)."""
from ..backbones.head import LinearHead
from .model import TransferModel

__all__ = ["LinearHead", "TransferModel"]
