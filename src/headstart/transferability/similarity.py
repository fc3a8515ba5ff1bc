"""Domain similarity between two feature samples (a source reference set and the target set).

All three are distances: 0 means the two samples look alike, larger means further apart.

- ``mmd``: unbiased squared maximum mean discrepancy with an RBF kernel (Gretton et al.,
  "A Kernel Two-Sample Test", JMLR 2012), bandwidth by the median heuristic.
- ``frechet_distance``: the Fréchet distance between Gaussians fitted to the two samples
  (the FID formula of Heusel et al., NeurIPS 2017).
- ``proxy_a_distance``: 2 (1 - 2 err) with err the cross-validated error of a linear
  classifier told to separate the two domains (Ben-David et al., NeurIPS 2007).
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ConfigError, DataError
from .scores import check_features


def _pair(x, z) -> tuple[np.ndarray, np.ndarray]:
    x = check_features(x, "x")
    z = check_features(z, "z")
    if x.shape[1] != z.shape[1]:
        raise DataError(f"x has {x.shape[1]} features per row but z has {z.shape[1]}; "
                        f"compare features from the same backbone layer.")
    return x, z


def _subsample(a: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    if len(a) <= rows:
        return a
    return a[np.sort(rng.choice(len(a), size=rows, replace=False))]


def _check_rows(max_rows: int, least: int = 2) -> int:
    if int(max_rows) < least:
        raise ConfigError(f"max_rows must be at least {least}; got {max_rows}.")
    return int(max_rows)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a ** 2, 1)[:, None] + np.sum(b ** 2, 1)[None, :] - 2 * (a @ b.T)
    return np.clip(d, 0.0, None)


def mmd(x, z, *, bandwidth: float | None = None, max_rows: int = 2000, seed: int = 0) -> float:
    """Unbiased squared MMD between samples x (m, d) and z (n, d) with the RBF kernel
    k(a, b) = exp(-||a - b||^2 / (2 h^2)).

    h is the median pairwise distance of the pooled sample unless ``bandwidth`` is given.
    Each sample is randomly subsampled (``seed``) to at most ``max_rows`` rows. The unbiased
    estimate leaves out the i = j terms, so it is about 0 for samples from one distribution
    and can then be slightly negative.
    """
    x, z = _pair(x, z)
    rng = np.random.default_rng(seed)
    rows = _check_rows(max_rows)
    x, z = _subsample(x, rows, rng), _subsample(z, rows, rng)
    dxx, dzz, dxz = _sq_dists(x, x), _sq_dists(z, z), _sq_dists(x, z)
    if bandwidth is None:
        h2 = _median_sq_dist(dxx, dzz, dxz)
    elif not bandwidth > 0:
        raise ConfigError(f"bandwidth must be positive; got {bandwidth}.")
    else:
        h2 = float(bandwidth) ** 2
    m, n = len(x), len(z)
    kxx = np.exp(-dxx / (2 * h2))
    kzz = np.exp(-dzz / (2 * h2))
    kxz = np.exp(-dxz / (2 * h2))
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_z = (kzz.sum() - np.trace(kzz)) / (n * (n - 1))
    return float(within_x + within_z - 2 * kxz.mean())


def _median_sq_dist(dxx: np.ndarray, dzz: np.ndarray, dxz: np.ndarray) -> float:
    """Median squared distance over all distinct pairs of the pooled sample (1 if all equal)."""
    pairs = np.concatenate([dxx[np.triu_indices(len(dxx), 1)],
                            dzz[np.triu_indices(len(dzz), 1)], dxz.ravel()])
    med = float(np.median(pairs))
    return med if med > 0 else 1.0


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x, z) -> float:
    """Fréchet distance between Gaussians fitted to x and z (FID formula, squared units):

    ||mu_x - mu_z||^2 + tr(C_x) + tr(C_z) - 2 tr((C_x^1/2 C_z C_x^1/2)^1/2).

    The matrix square roots come from symmetric eigendecompositions with negative round-off
    eigenvalues clipped to 0, so singular covariances (fewer rows than features) are fine;
    the result is clipped at 0.
    """
    x, z = _pair(x, z)
    cx = np.atleast_2d(np.cov(x, rowvar=False))
    cz = np.atleast_2d(np.cov(z, rowvar=False))
    root = _sqrt_psd(cx)
    middle = root @ cz @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    cross = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    diff = x.mean(0) - z.mean(0)
    return float(max(diff @ diff + np.trace(cx) + np.trace(cz) - 2 * cross, 0.0))


def proxy_a_distance(x, z, *, seed: int = 0, folds: int = 5, ridge: float = 1.0,
                     max_rows: int = 2000) -> float:
    """Proxy A-distance 2 (1 - 2 err), clipped to [0, 2]: about 0 when a linear classifier
    cannot tell x from z, 2 when it separates them perfectly.

    Both samples are subsampled (``seed``) to the same size, min(len(x), len(z), max_rows),
    so chance error is 0.5. err is the ``folds``-fold cross-validated error of a ridge
    least-squares classifier (targets -1/+1, intercept, features standardised on the
    training folds, penalty ``ridge``).
    """
    x, z = _pair(x, z)
    if int(folds) < 2:
        raise ConfigError(f"folds must be at least 2; got {folds}.")
    if not ridge > 0:
        raise ConfigError(f"ridge must be positive; got {ridge}.")
    rng = np.random.default_rng(seed)
    rows = min(len(x), len(z), _check_rows(max_rows, folds))
    if rows < folds:
        raise DataError(f"proxy_a_distance needs at least folds={folds} rows in each sample; "
                        f"got {len(x)} and {len(z)}.")
    data = np.vstack([_subsample(x, rows, rng), _subsample(z, rows, rng)])
    target = np.repeat([-1.0, 1.0], rows)
    fold = np.concatenate([rng.permutation(rows) % folds, rng.permutation(rows) % folds])
    wrong = 0
    for k in range(int(folds)):
        test = fold == k
        pred = _ridge_classify(data[~test], target[~test], data[test], ridge)
        wrong += int(np.sum(pred != target[test]))
    err = wrong / len(data)
    return float(np.clip(2 * (1 - 2 * err), 0.0, 2.0))


def _ridge_classify(xtr: np.ndarray, ttr: np.ndarray, xte: np.ndarray, ridge: float):
    """Signs of a ridge regression on -1/+1 targets with an unpenalised intercept."""
    mean, std = xtr.mean(0), xtr.std(0)
    std[std == 0] = 1.0
    a, b = (xtr - mean) / std, (xte - mean) / std
    t = ttr - ttr.mean()
    n, d = a.shape
    if n >= d:
        w = np.linalg.solve(a.T @ a + ridge * np.eye(d), a.T @ t)
    else:
        w = a.T @ np.linalg.solve(a @ a.T + ridge * np.eye(n), t)
    return np.where(b @ w + ttr.mean() >= 0, 1.0, -1.0)
