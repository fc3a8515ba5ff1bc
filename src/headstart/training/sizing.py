"""Choose the input by measurement: a quick cross-validated linear probe on a stratified sample
of the data, at a few candidate image sizes and, for each, at the whole network and at earlier
layer cuts of it (one forward pass taps them all).

- Size: the smallest size within TOLERANCE of the best wins (compute grows with the square of
  the size).
- Cut: the whole network is kept unless a cut beats it by more than TOLERANCE. Early layers
  are more general than late ones (Yosinski et al. 2014): on data far from the source task
  (small grey silhouettes for an ImageNet network, say) a cut can transfer clearly better, and
  it is cheaper; on near data the whole network wins, and a tie keeps it.
"""
from __future__ import annotations

import numpy as np

from ..backbones import count_flops, create_backbone, get_config
from ..backbones.cut import CutBackbone, default_cuts, one_thread, truncate
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
    """(size, measurements, reason) for cfg.backbone as it is (no cut is measured)."""
    size, _, rows, reason = choose_input(ds, cfg, cache=cache, progress=progress, cuts=(),
                                         per_class=per_class, max_images=max_images)
    return size, rows, reason


def choose_input(ds: ImageDataset, cfg, *, cache: FeatureCache | None, progress: bool,
                 cuts: tuple[str, ...] | None = None, per_class: int = 20,
                 max_images: int = 400) -> tuple[int, str, list[dict], str]:
    """(size, backbone, measurements, reason). Sizes are measured when cfg.image_size is
    "auto"; `cuts` (default: two earlier groups of the backbone, see default_cuts) at each.
    Samples at most `per_class` images per class and about `max_images` in all (at least 3
    per class), so many-class data stays cheap to measure."""
    bcfg = get_config(cfg.backbone)
    native = bcfg.input_size
    sizes = candidate_sizes(native, bcfg.min_size) if cfg.image_size == "auto" \
        else [int(cfg.image_size)]
    cuts = tuple(default_cuts(cfg.backbone) if cuts is None else cuts)
    per_class = max(3, min(per_class, max_images // max(1, len(ds.classes))))
    sub = ds.subset(sample_per_class(ds.labels, per_class, cfg.seed))
    k = min(5, min(sub.counts().values()))
    fallback = sizes[-1] if cfg.image_size == "auto" else sizes[0]
    if k < 2 or (len(sizes) == 1 and not cuts):
        return fallback, cfg.backbone, [], ("too few images per class to measure; using the "
                                           f"{'native' if cfg.image_size == 'auto' else 'given'}"
                                           " size and the whole network")
    compute = _relative_compute(cfg.backbone, cuts)
    rows = []
    for size in sizes:
        measured = _measure(sub, cfg, size, cuts, cache=cache, progress=progress)
        if measured is None:
            return fallback, cfg.backbone, [], ("too few readable images to measure; using "
                                                "the native size and the whole network")
        for cut, acc in measured:
            rows.append({"image_size": size, "backbone": _name(cfg.backbone, cut),
                         "cv_accuracy": round(acc, 4),
                         "relative_compute": round(compute[cut] * (size / native) ** 2, 2)})
    size, backbone = _pick(rows, cfg.backbone)
    what = ("sizes" if len(sizes) > 1 else f"{sizes[0]}px") + (" and cuts" if cuts else "")
    reason = (f"{k}-fold linear-probe accuracy on {len(sub)} images over {what}; smallest "
              f"size within {TOLERANCE:.0%} of the best"
              + ("; a cut only where it beats the whole network by more" if cuts else ""))
    return size, backbone, rows, reason


def _name(backbone: str, cut: str | None) -> str:
    return backbone if cut is None else f"{backbone}@{cut}"


def _pick(rows: list[dict], whole: str) -> tuple[int, str]:
    """The whole network unless a cut's best beats the whole network's by more than
    TOLERANCE; then, for that network, the smallest size within TOLERANCE of its best."""
    def best(name):
        return max(r["cv_accuracy"] for r in rows if r["backbone"] == name)
    chosen = whole
    cut_rows = [r for r in rows if r["backbone"] != whole]
    if cut_rows:
        top = max(cut_rows, key=lambda r: (r["cv_accuracy"], -r["relative_compute"]))
        if top["cv_accuracy"] > best(whole) + TOLERANCE:
            chosen = top["backbone"]
    within = [r for r in rows if r["backbone"] == chosen
              and r["cv_accuracy"] >= best(chosen) - TOLERANCE]
    return min(r["image_size"] for r in within), chosen


def _measure(sub, cfg, size: int, cuts: tuple[str, ...], *, cache, progress):
    """[(cut or None, cv accuracy)] at one size from one forward pass (cuts tapped on the
    way), or None when fewer than two classes were readable."""
    net = create_backbone(cfg.backbone, image_size=size, weights=cfg.weights)
    run = CutBackbone(net, cuts, keep_output=True) if cuts else net
    pre = Preprocess(size, net.config.mean, net.config.std)
    ex = extract_features(sub, FeatureExtractor(run), pre, cache=cache, skip_bad=True,
                          progress=progress, desc=f"measuring {size}px")
    if cuts:
        run.remove_hooks()
    y = np.array([sub.classes.index(sub.labels[i]) for i in ex.kept])
    if len(set(y.tolist())) < 2:
        return None
    k = min(5, int(np.bincount(y).min()))
    parts = np.split(ex.features, np.cumsum(run.dims)[:-1], axis=2) if cuts else [ex.features]
    return [(cut, cv_accuracy(np.ascontiguousarray(f), y, k, C=cfg.C, seed=cfg.seed))
            for cut, f in zip((*run.groups, None) if cuts else (None,), parts)]


def _relative_compute(backbone: str, cuts: tuple[str, ...]) -> dict:
    """FLOPs of each cut (None: the whole network) relative to the whole network, at the
    native size."""
    full = create_backbone(backbone, pretrained=False)
    with one_thread():
        whole = count_flops(full)
        out = {None: 1.0}
        for cut in cuts:
            out[cut] = count_flops(truncate(create_backbone(backbone, pretrained=False), cut)) \
                / max(whole, 1)
    return out
