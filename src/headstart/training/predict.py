"""Inference for a trained model: backbone features (ONNX Runtime or PyTorch), then the head,
averaged over the flip views when the run was trained with flips."""
from __future__ import annotations

import numpy as np
import torch

from .. import devices, modalities
from ..data.datasets import LabelledData
from ..data.images import DEFAULT_MAX_PIXELS
from .extract import extract_features
from .features import FeatureExtractor


def predict_logits(model, ds: LabelledData, pre, *, flip: bool, engine: str = "auto",
                   batch_size: int = 64, progress: bool = True, skip_bad: bool = False,
                   extractor: FeatureExtractor | None = None, return_kept: bool = False,
                   cache=None, max_pixels: int = DEFAULT_MAX_PIXELS,
                   autocast: torch.dtype | None = None):
    """Logits (n, classes) of `model` on `ds`. `autocast`: the backbone's pass under autocast
    at that precision (eager PyTorch only: a training's validation, which only chooses; such
    features are never cached); the head always runs in fp32 on the features."""
    was_training = model.training
    model.eval()
    try:
        extractor = extractor or FeatureExtractor(model.backbone, engine=engine)
        with devices.autocast(devices.of(model), autocast):
            ex = extract_features(ds, extractor, pre, views=modalities.of(ds).views(flip),
                                  skip_bad=skip_bad, batch_size=batch_size, progress=progress,
                                  desc="predicting", max_pixels=max_pixels,
                                  cache=cache if autocast is None else None)  # fp32 only
        with torch.inference_mode():
            f = (torch.from_numpy(ex.features) if ex.features is not None  # none readable
                 else torch.zeros(0, 1, model.head.fc.in_features))
            logits = view_averaged(model.head, f)
    finally:
        model.train(was_training)
    logits = logits.numpy()
    return (logits, ex) if return_kept else logits


def view_averaged(head, f: torch.Tensor) -> torch.Tensor:
    """The head's logits for (n, views, dim) features, averaged over the views."""
    logits = head(devices.to(f.flatten(0, 1).float(), devices.of(head))).cpu()
    return logits.view(f.shape[0], f.shape[1], -1).mean(1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
