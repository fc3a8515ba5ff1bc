"""The classic arm of `headstart compare`: the best model a user could build in seconds without a
pre-trained network, which on small data is often transfer's real competitor.

- images: a standardised multinomial logistic regression (scikit-learn) on the images shrunk to
  a small fixed size, grey or RGB, or on a HOG descriptor (histograms of oriented gradients,
  Dalal and Triggs 2005, written here in NumPy: 4 px cells, 9 unsigned orientations, 2 x 2
  cell blocks, L2-Hys normalised);
- texts: TF-IDF of word 1-2-grams and character 2-5-grams (within word boundaries), sublinear
  term frequencies, and a logistic regression.

Every choice (size, colour, descriptor, C) is made by stratified k-fold cross-validation on the
training examples alone: never on the validation or the test examples. For texts the TF-IDF
vocabulary and weights are fitted once on the training examples (no labels involved) and only
C is cross-validated; for images the standardisation is refitted inside every fold.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS, open_image
from ..exceptions import DataError, ImageReadError

IMAGE_SIZES = (8, 16, 32)  # the longest side is capped at the images' own (median) size
HOG_SIZE, HOG_CELL, HOG_BINS = 32, 4, 9
IMAGE_CS = (0.001, 0.01, 0.1, 1.0)
TEXT_CS = (1.0, 10.0, 100.0)
MAX_FOLDS = 5
DEFAULT_IMAGE = ("pixels", 16)  # without enough examples to cross-validate


@dataclass
class ClassicModel:
    """A fitted classic model: `predict(sources)` gives class indices of `classes`."""
    modality: str
    features: str  # e.g. "grey pixels 16x16", "HOG on 32x32 grey", "TF-IDF word 1-2 + char 2-5"
    C: float
    classes: list[str]
    cv_accuracy: float | None  # of the chosen setting (None: too few examples to cross-validate)
    chosen_by: str
    measured: list[dict] = field(default_factory=list)  # every setting tried: cv accuracy
    setting: dict = field(default_factory=dict)  # what `features` says, as figures
    folds: int | None = None
    seconds: float = 0.0  # reading + cross-validation + final fit
    _encode: object = field(default=None, repr=False)
    _clf: object = field(default=None, repr=False)

    def predict(self, sources, *, max_pixels: int | None = None) -> np.ndarray:
        return self.predict_kept(sources, max_pixels=max_pixels)[0]

    def predict_kept(self, sources, *, max_pixels: int | None = None,
                     skip_bad: bool = False) -> tuple[np.ndarray, list[int]]:
        """(class indices, the indices of `sources` predicted): with `skip_bad`, images that
        cannot be read are left out instead of stopping with their name."""
        with one_thread():
            X, kept = self._encode(sources, max_pixels, skip_bad)
            return self._clf.predict(X), kept

    def describe(self) -> str:
        how = (f"{self.cv_accuracy:.1%} cross-validated on the training part"
               if self.cv_accuracy is not None else self.chosen_by)
        return f"logistic regression on {self.features}, C={self.C:g} ({how})"

    def to_dict(self) -> dict:
        return {"features": self.features, "setting": self.setting, "C": self.C,
                "cv_accuracy": self.cv_accuracy, "folds": self.folds,
                "chosen_by": self.chosen_by, "measured": self.measured,
                "fit_seconds": round(self.seconds, 3), "description": self.describe()}


def fit_classic(train, *, seed: int = 0, max_pixels: int | None = None,
                skip_bad: bool = False) -> ClassicModel:
    """Fit the classic model of `train`'s modality (a LabelledData: images or texts); with
    `skip_bad`, training images that cannot be read are left out (as the other arms do)."""
    t0 = time.perf_counter()
    classes = train.classes
    y = np.array([classes.index(v) for v in train.labels], np.int64)
    fit = CLASSIC_FITS.get(train.modality)
    if fit is None:
        raise DataError(f"no classic model for {train.modality} data; the classic arm knows "
                        f"{', '.join(sorted(CLASSIC_FITS))}")
    with one_thread():
        model = fit(list(train.sources), y, seed=seed, max_pixels=max_pixels,
                    skip_bad=skip_bad)
    model.classes, model.seconds = classes, time.perf_counter() - t0
    return model


def one_thread():
    """One BLAS/OpenMP thread: these fits are small, and on a shared 2-core machine two
    threads made a 160 x 784 logistic regression 10-20x slower (0.56 s against 0.037 s,
    measured with another job running)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1)


# -- cross-validation ----------------------------------------------------------------------
def _folds(y: np.ndarray, seed: int):
    """Stratified folds (at most 5, at least 2), or None with fewer than 2 per class."""
    from sklearn.model_selection import StratifiedKFold
    k = min(MAX_FOLDS, int(np.bincount(y).min()))
    if k < 2:
        return None
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _logistic(C: float, *, warm: bool = False):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=2000, tol=1e-4, warm_start=warm)


def _cv_scores(X, y, folds, Cs, *, scale: bool) -> list[float]:
    """Mean fold accuracy for each C (ascending C, warm-started along the path)."""
    from sklearn.preprocessing import StandardScaler
    hits = np.zeros(len(Cs))
    for tr, va in folds:
        xtr, xva = X[tr], X[va]
        if scale:
            sc = StandardScaler().fit(xtr)
            xtr, xva = sc.transform(xtr), sc.transform(xva)
        clf = _logistic(Cs[0], warm=True)
        for i, C in enumerate(Cs):
            clf.set_params(C=C)
            clf.fit(xtr, y[tr])
            hits[i] += (clf.predict(xva) == y[va]).sum()
    return (hits / len(y)).tolist()


def _pick(measured: list[dict]) -> dict:
    """The best cross-validated setting; ties go to the earlier (smaller, more regularised)."""
    return max(measured, key=lambda r: r["cv_accuracy"])  # max keeps the first of ties


# -- images --------------------------------------------------------------------------------
def _fit_images(sources, y, *, seed, max_pixels, skip_bad) -> ClassicModel:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    imgs, kept = _read(sources, max_pixels, skip_bad=skip_bad)
    y = y[kept]
    grey = all(_is_grey(a) for a in imgs)
    side = int(np.median([min(a.shape[:2]) for a in imgs]))
    settings = _image_settings(grey, side)
    folds = _folds(y, seed)
    measured = []
    if folds is None:
        kind, size = DEFAULT_IMAGE
        best = {"kind": kind, "size": min(size, side), "grey": grey, "C": 1.0}
        chosen_by = ("default setting: fewer than 2 examples in some class, nothing to "
                     "cross-validate")
    else:
        for s in settings:
            X = image_features(imgs, **_shape(s))
            for C, acc in zip(IMAGE_CS, _cv_scores(X, y, folds, IMAGE_CS, scale=True)):
                measured.append({**s, "C": C, "cv_accuracy": round(acc, 4),
                                 "features": _image_name(s)})
        best = _pick(measured)
        chosen_by = f"{len(folds)}-fold cross-validation on the training part"
    setting = {k: v for k, v in best.items() if k not in ("C", "cv_accuracy", "features")}
    clf = make_pipeline(StandardScaler(), _logistic(best["C"]))
    clf.fit(image_features(imgs, **_shape(setting)), y)

    def encode(srcs, mp, skip=False):
        imgs, kept = _read(srcs, mp, skip_bad=skip)
        return image_features(imgs, **_shape(setting)), kept
    return ClassicModel("image", _image_name(setting), best["C"], [], best.get("cv_accuracy"),
                        chosen_by, measured, setting, len(folds) if folds else None, _encode=encode,
                        _clf=clf)


def _image_settings(grey: bool, side: int) -> list[dict]:
    sizes = sorted({min(s, side) for s in IMAGE_SIZES})
    colours = (True,) if grey else (True, False)
    out = [{"kind": "pixels", "size": s, "grey": g} for g in colours for s in sizes]
    return out + [{"kind": "hog", "size": HOG_SIZE, "grey": True, "cell": HOG_CELL,
                   "bins": HOG_BINS}]


def _shape(setting: dict) -> dict:
    return {k: setting[k] for k in ("kind", "size", "grey")}


def _image_name(s: dict) -> str:
    size = s["size"]
    if s["kind"] == "hog":
        return f"HOG of the {size}x{size} grey image ({s['cell']} px cells, {s['bins']} bins)"
    return f"{'grey' if s['grey'] else 'RGB'} pixels at {size}x{size}"


def _read(sources, max_pixels, *, skip_bad: bool = False) -> tuple[list[np.ndarray], list]:
    """(every image as an RGB uint8 array, the indices read); an unreadable image stops with
    its name, or is left out with `skip_bad`."""
    out, kept = [], []
    for i, s in enumerate(sources):
        try:
            out.append(np.asarray(open_image(s, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                                             fit=max(*IMAGE_SIZES, HOG_SIZE)), np.uint8))
            kept.append(i)
        except ImageReadError:
            if not skip_bad:
                raise
    if not out:
        raise DataError("the classic arm got no readable images to fit; give the compare "
                        "some data")
    return out, kept


def _is_grey(a: np.ndarray) -> bool:
    return bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))


def image_features(imgs: list[np.ndarray], *, kind: str, size: int, grey: bool) -> np.ndarray:
    """(n, d) float32: pixels in [0, 1] of each image shrunk to size x size (area averaging),
    or its HOG descriptor."""
    from PIL import Image
    mode = "L" if grey or kind == "hog" else "RGB"
    small = np.stack([np.asarray(Image.fromarray(a).convert(mode).resize(
        (size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0 for a in imgs])
    if kind == "hog":
        return hog(small)
    return small.reshape(len(imgs), -1)


def hog(grey: np.ndarray, *, cell: int = HOG_CELL, bins: int = HOG_BINS) -> np.ndarray:
    """HOG descriptors of (n, H, W) grey images: centred gradients, unsigned orientation in
    `bins` bins (linear vote between the two nearest), summed over cell x cell pixel cells,
    then each 2 x 2 block of cells L2-normalised, clipped at 0.2 and normalised again."""
    g = np.asarray(grey, dtype=np.float32)
    n, h, w = g.shape
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.hypot(gx, gy)
    pos = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins - 0.5  # bin centres at k + 0.5
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64) % bins
    ch, cw = h // cell, w // cell
    eye = np.eye(bins, dtype=np.float32)
    votes = (mag * (1 - frac))[..., None] * eye[lo] + (mag * frac)[..., None] * eye[(lo + 1) % bins]
    cells = votes[:, :ch * cell, :cw * cell].reshape(n, ch, cell, cw, cell, bins).sum((2, 4))
    blocks = np.concatenate([cells[:, i:ch - 1 + i, j:cw - 1 + j] for i in (0, 1)
                             for j in (0, 1)], axis=-1)  # (n, ch-1, cw-1, 4 * bins)
    blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-6)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + 1e-6)
    return blocks.reshape(n, -1)


# -- texts ---------------------------------------------------------------------------------
WORD_NGRAMS, CHAR_NGRAMS, MAX_CHAR_FEATURES = (1, 2), (2, 5), 200_000
TEXT_SETTING = {"word_ngrams": list(WORD_NGRAMS), "char_ngrams": list(CHAR_NGRAMS)}
TEXT_FEATURES = (f"TF-IDF of word {WORD_NGRAMS[0]}-{WORD_NGRAMS[1]}-grams and character "
                 f"{CHAR_NGRAMS[0]}-{CHAR_NGRAMS[1]}-grams")


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union
    return make_union(
        TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True,
                        max_features=MAX_CHAR_FEATURES))


def _fit_texts(texts, y, *, seed, max_pixels, skip_bad) -> ClassicModel:
    vec = _vectorizer()
    X = vec.fit_transform(texts)
    folds = _folds(y, seed)
    measured = []
    if folds is None:
        C, chosen_by, cv = 10.0, ("default C: fewer than 2 examples in some class, nothing to "
                                  "cross-validate"), None
    else:
        scores = _cv_scores(X, y, folds, TEXT_CS, scale=False)
        measured = [{**TEXT_SETTING, "C": C, "cv_accuracy": round(acc, 4),
                     "features": TEXT_FEATURES} for C, acc in zip(TEXT_CS, scores)]
        best = _pick(measured)
        C, cv = best["C"], best["cv_accuracy"]
        chosen_by = f"{len(folds)}-fold cross-validation on the training part"
    clf = _logistic(C).fit(X, y)
    return ClassicModel("text", TEXT_FEATURES, C, [], cv, chosen_by, measured,
                        dict(TEXT_SETTING), len(folds) if folds else None,
                        _encode=lambda srcs, *_: (vec.transform(list(srcs)),
                                                  list(range(len(srcs)))), _clf=clf)


# the classic model of each modality: what a practitioner fits without a pre-trained network
CLASSIC_FITS = {"image": _fit_images, "text": _fit_texts}
