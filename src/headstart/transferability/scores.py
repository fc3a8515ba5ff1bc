"""Transferability scores computed before any training: LogME, LEEP, NCE, H-score; bootstrap.

Each score looks at one source model through what it produces on the *target* data (pooled
features, softmax outputs or hard predicted labels) plus the target labels, and returns one
number; higher means the source should transfer better. Pure NumPy, float64 throughout.

References
- LogME: You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning", ICML 2021.
- LEEP: Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations", ICML 2020.
- NCE: Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019.
- H-score: Bao, Li, Huang, Zheng, Wang, Tan, Huang, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning", ICIP 2019; shrinkage version from Ibrahim,
  Ponomareva, Mazumder, "Newer is not always better: Rethinking transferability metrics,
  their peculiarities, stability and performance", ECML-PKDD 2022.
- Ledoit, Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
  J. Multivariate Analysis 2004.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..exceptions import ConfigError, DataError

_LOG_2PI = float(np.log(2 * np.pi))


# ----------------------------------------------------------------------------- validation

def check_features(features, name: str = "features", *, min_rows: int = 2) -> np.ndarray:
    """`features` as a finite float64 (n, d) array, or a DataError saying what is wrong."""
    a = np.asarray(features)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{name} must be a numeric array; got dtype {a.dtype}.")
    if a.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features); got shape {a.shape}. "
                        f"For one feature per sample use {name}.reshape(-1, 1).")
    if a.shape[0] < min_rows or a.shape[1] < 1:
        raise DataError(f"{name} has shape {a.shape}; need at least {min_rows} rows "
                        f"and 1 column.")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(f"{name} contain {int(bad.sum())} NaN/inf values (first in row {row}); "
                        f"drop or impute those rows first.")
    return a


def check_labels(y, n: int, name: str = "y", *, rows_of: str = "features",
                 min_classes: int = 2) -> tuple[np.ndarray, int]:
    """Labels of any type as codes 0..C-1 and C, checked against `n` rows of `rows_of`."""
    a = np.asarray(y)
    if a.ndim != 1:
        hint = " Pass class indices, not one-hot rows (y.argmax(1))." if a.ndim == 2 else ""
        raise DataError(f"{name} must be 1-D (one label per sample); got shape {a.shape}.{hint}")
    if len(a) != n:
        raise DataError(f"{rows_of} has {n} rows but {name} has {len(a)} labels; "
                        f"they must match one-to-one.")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN/inf labels; drop those samples first.")
    classes, codes = np.unique(a, return_inverse=True)
    if len(classes) < min_classes:
        raise DataError(f"{name} has {len(classes)} class(es) ({classes[:3].tolist()}); "
                        f"a transferability score needs at least {min_classes}.")
    return codes.reshape(-1), len(classes)


def _one_hot(codes: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(codes), num_classes))
    out[np.arange(len(codes)), codes] = 1.0
    return out


# ----------------------------------------------------------------------------- LogME

def logme(features, y, *, tol: float = 1e-8, max_iter: int = 1000) -> float:
    """LogME: mean over classes of the maximised log evidence per sample (higher is better).

    For each class k, the one-vs-rest target y_k (one-hot column) is modelled as a Bayesian
    linear regression on the raw features, y_k = F w + noise, w ~ N(0, I/alpha),
    noise ~ N(0, I/beta). alpha and beta maximise the evidence p(y_k | F, alpha, beta) by
    MacKay's fixed-point iteration (gamma = sum beta*s_i / (alpha + beta*s_i),
    alpha = gamma / m'm, beta = (n - gamma) / ||F m - y_k||^2), and the score is
    mean_k log p(y_k | F, alpha_k, beta_k) / n. Features are used as given (no centring,
    no bias column), as in the paper. One eigendecomposition of the Gram matrix (equivalent
    to an SVD of F: eigenvalues s_i are squared singular values) is shared by all classes,
    and the iteration runs for all classes at once.
    """
    f = check_features(features)
    codes, num_classes = check_labels(y, len(f))
    targets = _one_hot(codes, num_classes)
    sigma, proj = _gram_spectrum(f, targets)
    n, d = f.shape
    yy = targets.sum(0)  # ||y_k||^2 of a 0/1 column is its count
    alpha, beta = _fixed_point(sigma, proj, yy, n, tol=tol, max_iter=max_iter)
    evidence = _log_evidence(alpha, beta, sigma, proj, yy, n, d)
    return float(np.mean(evidence) / n)


def _gram_spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues s_i of F'F (as column (k, 1)) and p_ik = v_i' F' y_k = sqrt(s_i) u_i' y_k.

    Everything the evidence needs is a function of s and p; working with p (never dividing by
    a small singular value) keeps rank-deficient features numerically stable.
    """
    n, d = f.shape
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)
        sigma = np.clip(sigma, 0.0, None)
        proj = v.T @ (f.T @ targets)
    else:
        sigma, u = np.linalg.eigh(f @ f.T)
        sigma = np.clip(sigma, 0.0, None)
        proj = np.sqrt(sigma)[:, None] * (u.T @ targets)
    return sigma[:, None], proj


def _posterior_terms(alpha, beta, sigma, proj, yy):
    """gamma, m'm and ||F m - y||^2 for each class, from the spectrum (vectorised)."""
    den = alpha + beta * sigma                       # (k, C)
    p2 = proj ** 2
    gamma = np.sum(beta * sigma / den, axis=0)
    mm = np.sum(beta ** 2 * p2 / den ** 2, axis=0)
    resid = yy - np.sum(beta * p2 * (den + alpha) / den ** 2, axis=0)
    return gamma, mm, np.clip(resid, 1e-300, None)


def _fixed_point(sigma, proj, yy, n, *, tol, max_iter):
    """MacKay's evidence-maximising updates for alpha and beta, all classes at once."""
    alpha = np.ones(proj.shape[1])
    beta = np.ones(proj.shape[1])
    for _ in range(max_iter):
        gamma, mm, resid = _posterior_terms(alpha, beta, sigma, proj, yy)
        new_alpha = np.clip(gamma / np.maximum(mm, 1e-300), 1e-12, 1e12)
        new_beta = np.clip((n - gamma) / resid, 1e-12, 1e12)
        done = (np.all(np.abs(new_alpha - alpha) <= tol * alpha)
                and np.all(np.abs(new_beta - beta) <= tol * beta))
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta


def _log_evidence(alpha, beta, sigma, proj, yy, n, d):
    """log p(y | F, alpha, beta) per class (not yet divided by n)."""
    _, mm, resid = _posterior_terms(alpha, beta, sigma, proj, yy)
    k = sigma.shape[0]
    logdet_a = np.sum(np.log(alpha + beta * sigma), axis=0) + (d - k) * np.log(alpha)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * _LOG_2PI
            - beta / 2 * resid - alpha / 2 * mm - logdet_a / 2)


# ----------------------------------------------------------------------------- LEEP, NCE

def check_probs(source_probs, *, atol: float = 1e-3) -> np.ndarray:
    """Softmax outputs (n, Z): non-negative rows that sum to 1 (renormalised exactly)."""
    p = check_features(source_probs, "source_probs", min_rows=1)
    if (p < 0).any():
        raise DataError("source_probs has negative entries; pass softmax probabilities, "
                        "not logits (apply softmax first).")
    sums = p.sum(1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > atol:
        raise DataError(f"source_probs row {worst} sums to {sums[worst]:.4g}, expected 1; "
                        f"pass softmax probabilities, not logits or scores.")
    return p / sums[:, None]


def leep(source_probs, y) -> float:
    """LEEP: mean log-likelihood of the target labels under the "expected empirical predictor"
    built from the source classifier's softmax outputs theta(x) over Z source classes.

    P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z,  P(y | z) = P(y, z) / P(z),
    LEEP = 1/n sum_i log sum_z P(y_i | z) theta(x_i)_z.  At most 0; higher is better.
    """
    probs = check_probs(source_probs)
    codes, num_classes = check_labels(y, len(probs), rows_of="source_probs")
    joint = _one_hot(codes, num_classes).T @ probs / len(probs)     # (C, Z)
    marginal = joint.sum(0)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = np.sum(probs * cond[codes], axis=1)
    return float(np.mean(np.log(eep)))


def nce(source_labels, y) -> float:
    """NCE: the negative conditional entropy -H(Y | Z) in nats, with Z the source model's hard
    predicted label and Y the target label, from their empirical joint distribution.
    At most 0 (0 when Z determines Y); higher is better."""
    z = np.asarray(source_labels)
    if z.ndim != 1:
        raise DataError(f"source_labels must be 1-D (one predicted source class per sample); "
                        f"got shape {z.shape}. For softmax outputs use argmax(1) or LEEP.")
    codes, num_classes = check_labels(y, len(z), rows_of="source_labels")
    z_codes, num_z = check_labels(z, len(z), "source_labels", min_classes=1)
    counts = np.zeros((num_classes, num_z))
    np.add.at(counts, (codes, z_codes), 1.0)
    joint = counts / len(z)
    cond = joint / joint.sum(0, keepdims=True)  # every column has at least one sample
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(cond[nz])))


# ----------------------------------------------------------------------------- H-score

def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrunk covariance (1 - a) S + a mu I and the intensity a.

    S is the maximum-likelihood covariance (divides by n), mu = tr(S) / d, and
    a = min(b2, d2) / d2 with d2 = ||S - mu I||_F^2 and b2 = 1/n^2 sum_i ||x_i x_i' - S||_F^2.
    """
    xc = x - x.mean(0)
    n, d = xc.shape
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    d2 = np.sum(s ** 2) - 2 * mu * np.trace(s) + d * mu ** 2
    b2 = (np.sum(np.sum(xc ** 2, axis=1) ** 2) / n - np.sum(s ** 2)) / n
    a = 0.0 if d2 <= 0 else float(min(max(b2, 0.0), d2) / d2)
    shrunk = (1 - a) * s
    shrunk.flat[:: d + 1] += a * mu
    return shrunk, a


def hscore(features, y, *, shrinkage: bool = True) -> float:
    """H-score tr(cov(f)^-1 cov(E[f | y])): between-class spread of the features measured in
    units of their overall covariance (higher is better).

    With few samples or many dimensions cov(f) is singular and the plain score explodes. By
    default (``shrinkage=True``) this is the shrinkage H-score of Ibrahim et al. (2022):
    cov(f) is replaced by the Ledoit-Wolf estimate (1 - a) S + a mu I and the between-class
    covariance is scaled by (1 - a), giving tr(cov_a(f)^-1 (1 - a) cov(E[f | y])); both
    covariances divide by n. When the features look like isotropic noise Ledoit-Wolf picks
    a = 1 and the score is exactly 0. ``shrinkage=False`` gives the original score of Bao et
    al. (2019) with np.cov (divides by n - 1) and a pseudo-inverse.
    """
    f = check_features(features)
    codes, num_classes = check_labels(y, len(f))
    if not np.any(np.ptp(f, axis=0) > 0):
        raise DataError("features are constant across all samples; the H-score is undefined.")
    onehot = _one_hot(codes, num_classes)
    means = (onehot.T @ f) / onehot.sum(0)[:, None]
    g = means[codes]                                    # E[f | y] for every sample
    if shrinkage:
        cov_f, a = ledoit_wolf(f)
        gc = g - g.mean(0)
        cov_g = (1 - a) * (gc.T @ gc) / len(f)
        try:
            return float(np.trace(np.linalg.solve(cov_f, cov_g)))
        except np.linalg.LinAlgError:  # no shrinkage chosen and S singular: degenerate data
            return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))
    cov_f = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
    cov_g = np.cov(g, rowvar=False).reshape(f.shape[1], f.shape[1])
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))


def hscore_rows(f: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    """hscore(f[idx], y[idx]), the shrinkage version, by an exact shortcut: the trace equals
    (1-a)/n sum_k n_k d_k' cov^-1 d_k (d_k: centred class means), one solve with a column per
    class; with fewer rows than features everything is computed from the (n, n) Gram matrix
    K = Xc Xc' (Ledoit-Wolf's terms are traces of K, and cov^-1 follows by Woodbury)."""
    x, yi = f[idx], y[idx]
    n, d = x.shape
    xc = x - x.mean(0)
    onehot = _one_hot(yi, int(y.max()) + 1)
    counts = onehot.sum(0)
    e = onehot[:, counts > 0] / counts[counts > 0]  # E N^-1
    if n >= d:
        cov, a = ledoit_wolf(x)
        dev = xc.T @ e  # (d, C) centred class means
        return float((1 - a) / n * np.sum(counts[counts > 0] * np.sum(
            dev * np.linalg.solve(cov, dev), axis=0)))
    k = xc @ xc.T
    tr, fro2 = np.trace(k) / n, np.sum(k * k) / n ** 2  # tr(S), ||S||_F^2
    d2 = fro2 - tr ** 2 / d
    b2 = (np.sum(np.diag(k) ** 2) / n - fro2) / n
    a = 0.0 if d2 <= 0 else float(min(max(b2, 0.0), d2) / d2)
    c, b = a * tr / d, (1 - a) / n  # cov = c I + b Xc'Xc
    if c <= 1e-12 * max(tr, 1e-300):
        return hscore(x, yi)  # no shrinkage and a singular covariance: the reference's pinv
    q = k @ e
    inner = e.T @ q / c - b / c ** 2 * q.T @ np.linalg.solve(np.eye(n) + b / c * k, q)
    return float((1 - a) / n * np.sum(counts[counts > 0] * np.diag(inner)))


# ----------------------------------------------------------------------------- bootstrap

def bootstrap(fn: Callable[..., float], *arrays, n_boot: int = 200, seed: int = 0,
              stratify=None, joint: bool = True, level: float = 0.95) -> dict:
    """Uncertainty of ``fn(*arrays)`` by resampling rows with replacement.

    ``joint=True`` (default) resamples the same rows of every array (they must have equal
    length); ``stratify`` (labels, one per row) resamples within each class so every class
    keeps its count. ``joint=False`` resamples each array on its own, for two-sample measures
    such as ``mmd(x, z)``. Returns ``value`` (fn on the full data), ``mean`` and ``std`` of the
    replicates and the percentile interval ``lo``..``hi`` at ``level`` (95 %).

    Not for LogME or H-score: resampling with replacement duplicates rows, which a model of the
    features rewards (measured: LogME 0.44 -> 4.7 on 1,000 animal-mnist images). `rank` uses
    random half-samples without replacement for those (see `rank.resamples`).
    """
    if int(n_boot) < 2:
        raise ConfigError(f"n_boot must be at least 2; got {n_boot}.")
    if not 0 < level < 1:
        raise ConfigError(f"level must be between 0 and 1; got {level}.")
    if not arrays:
        raise ConfigError("bootstrap needs at least one array to resample after fn.")
    arrays = [np.asarray(a) for a in arrays]
    rng = np.random.default_rng(seed)
    draw = _joint_sampler(arrays, stratify) if joint else _independent_sampler(arrays, stratify)
    stats = np.array([float(fn(*draw(rng))) for _ in range(int(n_boot))])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return {"value": float(fn(*arrays)), "mean": float(stats.mean()),
            "std": float(stats.std(ddof=1)), "lo": float(lo), "hi": float(hi)}


def _joint_sampler(arrays: list[np.ndarray], stratify):
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise DataError(f"bootstrap arrays have lengths {[len(a) for a in arrays]}; joint "
                        f"resampling needs equal lengths (use joint=False for two samples).")
    if stratify is None:
        return lambda rng: [a[rng.integers(0, n, n)] for a in arrays]
    codes, _ = check_labels(stratify, n, "stratify", rows_of="the arrays", min_classes=1)
    groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]

    def draw(rng):
        idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        return [a[idx] for a in arrays]
    return draw


def _independent_sampler(arrays: list[np.ndarray], stratify):
    if stratify is not None:
        raise ConfigError("stratify needs joint=True (one set of rows shared by all arrays).")
    return lambda rng: [a[rng.integers(0, len(a), len(a))] for a in arrays]
