"""Choose the input by measurement: a quick cross-validated linear probe on a stratified sample
of the data, at a few candidate image sizes and, for each, at the whole network and at earlier
layer cuts of it (one forward pass taps them all).

- Size: the smallest size within TOLERANCE of the best wins (compute grows with the square of
  the size).
- Cut: the whole network is kept unless a cut beats it clearly: by more than TOLERANCE and
  by more than CUT_EVIDENCE standard errors of the paired difference (the same examples,
  scored right or wrong by both), so that on a few dozen images, where one image is two
  points and the best of several candidates wins by luck, the whole network stays. Early
  layers are more general than late ones (Yosinski et al. 2014): on data far from the source
  task (small grey silhouettes for an ImageNet network, say) a cut can transfer clearly
  better, and it is cheaper; on near data the whole network wins, and a tie keeps it.
"""
from __future__ import annotations

import numpy as np

from .. import modalities
from ..backbones import create_backbone, default_cuts, get_config
from ..backbones.cut import CutBackbone
from ..backbones.sizes import size_of
from ..data.datasets import LabelledData
from .extract import extract_features
from .features import FeatureCache, FeatureExtractor, weights_fingerprint
from .headfit import fit_linear_head, head_logits
from .mixing import paired_se

TOLERANCE = 0.01
CUT_EVIDENCE = 2.0  # standard errors a cut must win by (about 97.5% one-sided)


def candidate_sizes(native: int, minimum: int) -> list[int]:
    sizes = {max(minimum, int(round(native * f / 8)) * 8) for f in (0.5, 0.75)} | {native}
    return sorted(sizes)


# Hand-written rather than scikit-learn's StratifiedKFold / train_test_split: these draw the
# samples and folds every recorded measurement was made on (sklearn's would draw others).
def sample_per_class(labels: list[str], per_class: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        out += rng.permutation(idx)[:per_class].tolist()
    return sorted(out)


def cv_accuracy(features: np.ndarray, y: np.ndarray, k: int, *, C: float, seed: int) -> float:
    return float(cv_correct(features, y, k, C=C, seed=seed).mean())


def cv_correct(features: np.ndarray, y: np.ndarray, k: int, *, C: float,
               seed: int) -> np.ndarray:
    """Whether each example is predicted right by the head fitted on the other folds
    (stratified k-fold; the folds depend on y and seed only, so two feature sets of the same
    examples are scored on the same folds and can be compared example by example)."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), dtype=int)
    for c in np.unique(y):  # stratified folds
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = np.arange(len(idx)) % k
    right = np.zeros(len(y), dtype=bool)
    for f in range(k):
        tr, te = folds != f, folds == f
        W, b = fit_linear_head(features[tr], y[tr], int(y.max()) + 1, C=C, seed=seed)
        right[te] = head_logits(features[te], W, b).argmax(1) == y[te]
    return right


def choose_image_size(ds: LabelledData, cfg, *, cache: FeatureCache | None, progress: bool,
                      per_class: int = 20, max_images: int = 400) -> tuple[int, list[dict], str]:
    """(size, measurements, reason) for cfg.backbone as it is (no cut is measured)."""
    size, _, rows, reason = choose_input(ds, cfg, cache=cache, progress=progress, cuts=(),
                                         per_class=per_class, max_images=max_images)
    return size, rows, reason


def choose_input(ds: LabelledData, cfg, *, cache: FeatureCache | None, progress: bool,
                 cuts: tuple[str, ...] | None = None, per_class: int = 20,
                 max_images: int = 400,
                 extractors: dict | None = None) -> tuple[int, str, list[dict], str]:
    """(size, backbone, measurements, reason). Sizes are measured when cfg.input_size is
    "auto"; `cuts` (default: two earlier groups of the backbone, see default_cuts) at each.
    Samples at most `per_class` images per class and about `max_images` in all (at least 3
    per class), so many-class data stays cheap to measure. `extractors`, where given, gets
    {size: Tapped} for each size measured through ONNX Runtime with cuts tapped (see Tapped)."""
    bcfg = get_config(cfg.backbone)
    native = bcfg.input_size
    sizes = candidate_sizes(native, bcfg.min_size) if cfg.input_size == "auto" \
        else [int(cfg.input_size)]
    cuts = tuple(default_cuts(cfg.backbone) if cuts is None else cuts)
    per_class = max(3, min(per_class, max_images // max(1, len(ds.classes))))
    sub = ds.subset(sample_per_class(ds.labels, per_class, cfg.seed))
    k = min(5, min(sub.counts().values()))
    fallback = sizes[-1] if cfg.input_size == "auto" else sizes[0]
    if k < 2 or (len(sizes) == 1 and not cuts):
        return fallback, cfg.backbone, [], ("too few images per class to measure; using the "
                                           f"{'native' if cfg.input_size == 'auto' else 'given'}"
                                           " size and the whole network")
    compute = _relative_compute(cfg.backbone, cuts)
    rows, right = [], []
    for size in sizes:
        measured = _measure(sub, cfg, size, cuts, cache=cache, progress=progress,
                            extractors=extractors)
        if measured is None:
            return fallback, cfg.backbone, [], ("too few readable images to measure; using "
                                                "the native size and the whole network")
        for cut, correct in measured:
            rows.append({"image_size": size, "backbone": _name(cfg.backbone, cut),
                         "cv_accuracy": round(float(correct.mean()), 4),
                         "relative_compute": round(compute[cut] * (size / native) ** 2, 2)})
            right.append(correct)
    size, backbone = _pick(rows, cfg.backbone, right)
    what = ("sizes" if len(sizes) > 1 else f"{sizes[0]}px") + (" and cuts" if cuts else "")
    reason = (f"{k}-fold linear-probe accuracy on {len(sub)} images over {what}; smallest "
              f"size within {TOLERANCE:.0%} of the best"
              + (f"; a cut only where it beats the whole network by more than {TOLERANCE:.0%} "
                 f"and {CUT_EVIDENCE:g} standard errors" if cuts else ""))
    return size, backbone, rows, reason


def _name(backbone: str, cut: str | None) -> str:
    return backbone if cut is None else f"{backbone}@{cut}"


def _pick(rows: list[dict], whole: str, right: list[np.ndarray]) -> tuple[int, str]:
    """The whole network unless a cut wins clearly (see clear_win); then, for the network
    chosen, the smallest size within TOLERANCE of its best. `right[i]`: which sampled
    examples row i's probe got right (the same examples in every row)."""
    def best(name):  # the row of `name` with the best accuracy
        return max((i for i, r in enumerate(rows) if r["backbone"] == name),
                   key=lambda i: rows[i]["cv_accuracy"])
    chosen = whole
    cut_rows = [i for i, r in enumerate(rows) if r["backbone"] != whole]
    if cut_rows:
        top = max(cut_rows, key=lambda i: (rows[i]["cv_accuracy"],
                                           -rows[i]["relative_compute"]))
        if clear_win(right[top], right[best(whole)]):
            chosen = rows[top]["backbone"]
    top_acc = rows[best(chosen)]["cv_accuracy"]
    within = [r for r in rows if r["backbone"] == chosen
              and r["cv_accuracy"] >= top_acc - TOLERANCE]
    return min(r["image_size"] for r in within), chosen


def clear_win(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether predictions right/wrong `a` beat `b` on the same examples by more than
    TOLERANCE and by more than CUT_EVIDENCE standard errors of the paired difference."""
    if len(a) != len(b) or len(a) < 2:
        return False
    gain = float(a.mean() - b.mean())
    return gain > TOLERANCE and gain > CUT_EVIDENCE * paired_se(b, a)


def _measure(sub, cfg, size: int, cuts: tuple[str, ...], *, cache, progress,
             extractors: dict | None = None):
    """[(cut or None, which examples its cross-validated probe got right)] at one size from
    one forward pass (cuts tapped on the way), or None when fewer than two classes were
    readable."""
    net = create_backbone(cfg.backbone, input_size=size, weights=cfg.weights)
    run = CutBackbone(net, cuts, keep_output=True) if cuts else net
    pre = modalities.of(net).preprocess(net.config, size)
    extractor = FeatureExtractor(run)
    ex = extract_features(sub, extractor, pre, cache=cache, skip_bad=True,
                          progress=progress, desc=f"measuring {size}px")
    if cuts and extractors is not None:
        # the taps stay on this copy of the network: where every input measured came from the
        # cache, its graph is first loaded by the run's pass (WholeOutput), and the check of
        # that graph against PyTorch runs the tapped module
        extractors[size] = Tapped(extractor, net, pre)
    elif cuts:
        run.remove_hooks()
    y = np.array([sub.classes.index(sub.labels[i]) for i in ex.kept])
    if len(set(y.tolist())) < 2:
        return None
    k = min(5, int(np.bincount(y).min()))
    parts = np.split(ex.features, np.cumsum(run.dims)[:-1], axis=2) if cuts else [ex.features]
    return [(cut, cv_correct(np.ascontiguousarray(f), y, k, C=cfg.C, seed=cfg.seed))
            for cut, f in zip((*run.groups, None) if cuts else (None,), parts)]


def _relative_compute(backbone: str, cuts: tuple[str, ...]) -> dict:
    """FLOPs of each cut (None: the whole network) relative to the whole network, at the
    native size: the counts recorded for the shipped backbones, or counted once and kept in
    the cache (backbones/sizes.py), so that a run does not build and count every cut again."""
    whole = size_of(get_config(backbone)).flops
    out = {None: 1.0}
    for cut in cuts:
        out[cut] = size_of(get_config(_name(backbone, cut))).flops / max(whole, 1)
    return out


class Tapped:
    """The graph a measurement ran (the whole network with its cuts tapped on the way) as an
    extractor of the whole network's features alone: its last output, the same numbers bit for
    bit as the whole network's own ONNX graph gives, under that network's cache key. The run's
    pass over every input uses it where the measurement chose the whole network at this size,
    so that a first run exports and loads one graph, not two (about a second)."""

    def __init__(self, extractor: FeatureExtractor, whole, pre) -> None:
        self.extractor, self.whole, self.pre = extractor, whole, pre
        self.dim = extractor.backbone.dims[-1]

    def stand_in(self, own: FeatureExtractor, pre):
        """`own` (the run's backbone's extractor), or this graph in its place where it computes
        the same: the same network and weights (their fingerprint), the same pre-processing,
        on the CPU."""
        same = (own.backbone.config.name == self.whole.config.name
                and own.size == self.whole.input_size and own.device.type == "cpu"
                and pre.signature() == self.pre.signature()
                and own.fingerprint == weights_fingerprint(self.whole))
        return WholeOutput(self, own) if same else own


class WholeOutput:
    """A Tapped graph standing in for the FeatureExtractor `own` in one pass (key, call); where
    ONNX Runtime is missing, `own` computes (eager PyTorch on the run's own network)."""

    def __init__(self, tapped: Tapped, own: FeatureExtractor) -> None:
        self.tapped, self.own = tapped, own

    def key(self, pre) -> str:
        return self.own.key(pre)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        graph = self.tapped.extractor
        if graph.session is None:
            return self.own(batch)
        return graph(batch)[:, -self.tapped.dim:]
