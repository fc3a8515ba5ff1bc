"""Choose the input size by measurement: a quick cross-validated linear probe on a stratified
sample of the data at a few candidate sizes; the smallest size within a point of the best wins
(compute grows with the square of the size)."""
from __future__ import annotations

import numpy as np

from ..backbones import create_backbone, get_config
from ..data.datasets import ImageDataset
from ..data.transforms import Preprocess
from .extract import extract_features
from .features import FeatureCache, FeatureExtractor
from .headfit import fit_linear_head, head_logits

TOLERANCE = 0.01


def candidate_sizes(native: int, minimum: int) -> list[int]:
    sizes = {max(minimum, int(round(native * f / 8)) * 8) for f in (0.5, 0.75)} | {native}
    return sorted(sizes)


def sample_per_class(labels: list[str], per_class: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        out += rng.permutation(idx)[:per_class].tolist()
    return sorted(out)


def cv_accuracy(features: np.ndarray, y: np.ndarray, k: int, *, C: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), dtype=int)
    for c in np.unique(y):  # stratified folds
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = np.arange(len(idx)) % k
    correct = 0
    for f in range(k):
        tr, te = folds != f, folds == f
        W, b = fit_linear_head(features[tr], y[tr], int(y.max()) + 1, C=C, seed=seed)
        correct += int((head_logits(features[te], W, b).argmax(1) == y[te]).sum())
    return correct / len(y)


def choose_image_size(ds: ImageDataset, cfg, *, cache: FeatureCache | None, progress: bool,
                      per_class: int = 20, max_images: int = 400) -> tuple[int, list[dict], str]:
    """(size, measurements, reason). Samples at most `per_class` images per class and about
    `max_images` in all (at least 3 per class), so many-class data stays cheap to measure."""
    bcfg = get_config(cfg.backbone)
    per_class = max(3, min(per_class, max_images // max(1, len(ds.classes))))
    sizes = candidate_sizes(bcfg.input_size, bcfg.min_size)
    idx = sample_per_class(ds.labels, per_class, cfg.seed)
    sub = ds.subset(idx)
    classes = sub.classes
    counts = sub.counts()
    k = min(5, min(counts.values()))
    if k < 2 or len(sizes) == 1:
        return bcfg.input_size, [], "too few images per class to measure; using the native size"
    rows = []
    for size in sizes:
        backbone = create_backbone(cfg.backbone, image_size=size, weights=cfg.weights)
        pre = Preprocess(size, bcfg.mean, bcfg.std)
        ex = extract_features(sub, FeatureExtractor(backbone), pre, cache=cache, skip_bad=True,
                              progress=progress, desc=f"measuring {size}px")
        y = np.array([classes.index(sub.labels[i]) for i in ex.kept])
        if len(set(y.tolist())) < 2:
            return bcfg.input_size, [], "too few readable images to measure; using the native size"
        acc = cv_accuracy(ex.features, y, k, C=cfg.C, seed=cfg.seed)
        rows.append({"image_size": size, "cv_accuracy": round(acc, 4),
                     "relative_compute": round((size / bcfg.input_size) ** 2, 2)})
    best = max(r["cv_accuracy"] for r in rows)
    chosen = min(r["image_size"] for r in rows if r["cv_accuracy"] >= best - TOLERANCE)
    reason = (f"{k}-fold linear-probe accuracy on {len(sub)} images; smallest size within "
              f"{TOLERANCE:.0%} of the best")
    return chosen, rows, reason
