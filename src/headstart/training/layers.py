"""Choose how many top layers of a text encoder to pool, by measurement.

A sentence encoder's last layer is trained for sentence similarity; the layers below keep more
of the words themselves, which helps topic-like tasks once there are enough labels to use the
extra features. Which is better depends on the data, so it is measured: one pass computes the
pooled outputs of the last few layers (the last first, so that a prefix is the smaller
setting), and a cross-validated logistic probe on the training split compares the settings.
The fewest layers with the best accuracy win; every setting's features go into the cache, so
the run that follows reads them from there."""
from __future__ import annotations

import numpy as np

from .. import modalities
from ..backbones import create_backbone
from .extract import extract_features
from .features import FeatureCache, FeatureExtractor
from .sizing import cv_accuracy

CANDIDATES = (1, 2, 4)
MAX_EXAMPLES = 3000  # the cross-validation reads at most this many training texts


def choose_feature_layers(ds, cfg, pre, *, cache: FeatureCache | None, progress: bool
                          ) -> tuple[int, list[dict], str]:
    """(layers, measurements, reason) for a text dataset (the training split)."""
    counts = ds.counts()
    folds = min(5, min(counts.values()))
    backbone = create_backbone(cfg.backbone, input_size=int(cfg.input_size), weights=cfg.weights)
    n_layers = len(backbone.layers)
    candidates = [k for k in CANDIDATES if k <= n_layers]
    if folds < 2 or len(candidates) == 1:
        return 1, [], "too few texts per class to measure; using the last layer"
    backbone.set_feature_layers(max(candidates))
    extractor = FeatureExtractor(backbone)
    ex = extract_features(ds, extractor, pre, cache=cache, progress=progress,
                          batch_size=cfg.batch_size, desc="measuring layers")
    feats = ex.features  # (n, 1, k_max * dim), the last layer first
    dim = backbone.config.feature_dim
    if cache is not None:  # the smaller settings are prefixes: store them for the run
        hashes = [modalities.of(ds).content_key(t) for t in ds.sources]
        for k in candidates[:-1]:
            backbone.set_feature_layers(k)  # the key follows; the weights' fingerprint is kept
            cache.put_many(extractor.key(pre),
                           [(h, 0, feats[i, 0, :k * dim]) for i, h in enumerate(hashes)])
    classes = ds.classes
    y = np.array([classes.index(v) for v in ds.labels])
    idx = np.arange(len(y))
    if len(y) > MAX_EXAMPLES:
        idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(y))[:MAX_EXAMPLES])
    rows = [{"layers": k, "cv_accuracy": round(cv_accuracy(
        feats[idx, :, :k * dim], y[idx], folds, C=cfg.C, seed=cfg.seed), 4)}
        for k in candidates]
    best = max(r["cv_accuracy"] for r in rows)
    chosen = min(r["layers"] for r in rows if r["cv_accuracy"] >= best)
    reason = (f"{folds}-fold linear-probe accuracy on {len(idx)} training texts; the fewest "
              "layers with the best accuracy")
    return chosen, rows, reason
