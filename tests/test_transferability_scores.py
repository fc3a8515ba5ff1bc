"""Transferability scores: known answers, agreement with straightforward re-implementations
written here from the formulas, bootstrap intervals, and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.optimize import minimize
from scipy.spatial.distance import pdist
from scipy.stats import entropy
from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics.cluster import contingency_matrix
from sklearn.preprocessing import StandardScaler

from headstart.exceptions import ConfigError, DataError
from headstart.transferability import (SCORES, bootstrap, frechet_distance, hscore, leep,
                                       logme, mmd, nce, proxy_a_distance)
from headstart.transferability.similarity import _ridge_classify


def blobs(n=300, d=16, classes=3, sep=2.0, seed=0):
    """Gaussian classes whose means differ along random directions: separable features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, d)) * sep
    return centres[y] + rng.standard_normal((n, d)), y


def source_outputs(y, *, z=6, noise=0.3, seed=0):
    """Softmax outputs of a pretend source classifier whose favourite class follows y."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(y), z)) * noise
    logits[np.arange(len(y)), (2 * y) % z] += 3.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- LogME

def logme_direct(f, y):
    """Maximise log N(y_k; 0, F F'/alpha + I/beta) over log alpha, log beta with scipy, class
    by class: the evidence written as a Gaussian marginal, no SVD, no fixed point."""
    n = len(f)
    gram = f @ f.T
    total = 0.0
    for c in np.unique(y):
        t = (y == c).astype(float)

        def neg(v, t=t):
            cov = gram * np.exp(-v[0]) + np.eye(n) * np.exp(-v[1])
            chol = scipy.linalg.cho_factor(cov, lower=True)
            quad = t @ scipy.linalg.cho_solve(chol, t)
            logdet = 2 * np.sum(np.log(np.diag(chol[0])))
            return 0.5 * (quad + logdet + n * np.log(2 * np.pi))
        best = min((minimize(neg, x0, method="L-BFGS-B", bounds=[(-20, 20)] * 2,
                             options={"ftol": 1e-14, "gtol": 1e-10})
                    for x0 in ([0.0, 0.0], [3.0, 1.0])), key=lambda r: r.fun)
        total += -best.fun / n
    return total / len(np.unique(y))


@pytest.mark.parametrize("n, d", [(120, 8), (40, 60)])
def test_logme_matches_direct_evidence_maximisation(n, d):
    f, y = blobs(n, d, classes=3, sep=0.6, seed=n)
    assert logme(f, y) == pytest.approx(logme_direct(f, y), rel=1e-6, abs=1e-7)


def test_logme_prefers_separable_features():
    f, y = blobs(300, 16)
    shuffled = np.random.default_rng(1).permutation(y)
    assert logme(f, y) > logme(f, shuffled) + 0.1


def test_logme_labels_of_any_type_and_order():
    f, y = blobs(90, 5)
    names = np.array(["cat", "dog", "emu"])[y]
    assert logme(f, names) == pytest.approx(logme(f, y))


# ----------------------------------------------------------------------------- LEEP, NCE

def leep_loops(probs, y):
    n, z = probs.shape
    classes = sorted(set(y.tolist()))
    joint = {(c, j): 0.0 for c in classes for j in range(z)}
    for i in range(n):
        for j in range(z):
            joint[(y[i], j)] += probs[i, j] / n
    marg = [sum(joint[(c, j)] for c in classes) for j in range(z)]
    total = 0.0
    for i in range(n):
        total += np.log(sum(joint[(y[i], j)] / marg[j] * probs[i, j] for j in range(z)))
    return total / n


def test_leep_matches_loops_and_prefers_informative_source():
    y = np.arange(200) % 3
    probs = source_outputs(y)
    assert leep(probs, y) == pytest.approx(leep_loops(probs, y), rel=1e-10)
    assert leep(probs, y) > leep(probs, np.random.default_rng(0).permutation(y)) + 0.3
    assert leep(probs, y) <= 0


def test_nce_matches_contingency_table_and_prefers_informative_source():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    z = np.where(rng.random(300) < 0.8, y * 2, rng.integers(0, 7, 300))
    table = contingency_matrix(y, z).astype(float)       # rows: y, columns: z
    p = table / table.sum()
    h_y_given_z = entropy(p.ravel()) - entropy(p.sum(0))
    assert nce(z, y) == pytest.approx(-h_y_given_z, rel=1e-10)
    assert nce(z, y) > nce(z, rng.permutation(y)) + 0.3
    assert nce(y * 2, y) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- H-score

def test_hscore_plain_matches_np_cov_and_pinv():
    f, y = blobs(200, 6)
    g = np.stack([f[y == c].mean(0) for c in y])
    expected = np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(g, rowvar=False))
    assert hscore(f, y, shrinkage=False) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("n, d", [(200, 6), (30, 50)])
def test_hscore_shrinkage_matches_sklearn_ledoit_wolf(n, d):
    f, y = blobs(n, d, seed=d)
    cov, a = sk_ledoit_wolf(f)
    g = np.stack([f[y == c].mean(0) for c in y])
    expected = np.trace(np.linalg.inv(cov) @ ((1 - a) * np.cov(g, rowvar=False, ddof=0)))
    assert hscore(f, y) == pytest.approx(expected, rel=1e-8)


def test_hscore_prefers_separable_features():
    f, y = blobs(300, 16)
    shuffled = np.random.default_rng(1).permutation(y)
    for shrink in (True, False):
        assert hscore(f, y, shrinkage=shrink) > 5 * hscore(f, shuffled, shrinkage=shrink)


def test_hscore_shrinkage_stays_finite_when_cov_is_singular():
    f, y = blobs(20, 100)
    assert np.isfinite(hscore(f, y)) and hscore(f, y) > 0


# ----------------------------------------------------------------------------- similarity

def mmd_double_sums(x, z, h):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * h * h))
    m, n = len(x), len(z)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    szz = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j)
    sxz = sum(k(x[i], z[j]) for i in range(m) for j in range(n))
    return sxx / (m * (m - 1)) + szz / (n * (n - 1)) - 2 * sxz / (m * n)


def test_mmd_matches_double_sums_with_median_heuristic():
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((30, 4)), rng.standard_normal((25, 4)) + 0.5
    pooled = np.vstack([x, z])
    h = np.sqrt(np.median(pdist(pooled, "sqeuclidean")))
    assert mmd(x, z) == pytest.approx(mmd_double_sums(x, z, h), rel=1e-9)
    assert mmd(x, z, bandwidth=2.0) == pytest.approx(mmd_double_sums(x, z, 2.0), rel=1e-9)


def test_mmd_same_vs_shifted_and_subsampling():
    rng = np.random.default_rng(0)
    x, same = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    shifted = rng.standard_normal((400, 8)) + 1.0
    assert abs(mmd(x, same)) < 0.01
    assert mmd(x, shifted) > 0.1
    big = rng.standard_normal((2500, 3))
    assert mmd(big, big + 1, max_rows=300, seed=1) == pytest.approx(
        mmd(big, big + 1, max_rows=300, seed=1))


def frechet_scipy(x, z):
    cx, cz = np.cov(x, rowvar=False), np.cov(z, rowvar=False)
    root = scipy.linalg.sqrtm(cx @ cz).real
    diff = x.mean(0) - z.mean(0)
    return diff @ diff + np.trace(cx + cz - 2 * root)


def test_frechet_matches_scipy_sqrtm_and_known_answers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    z = rng.standard_normal((400, 6)) * 2 + 0.3
    assert frechet_distance(x, z) == pytest.approx(frechet_scipy(x, z), rel=1e-7)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(6.0)
    assert frechet_distance(x, x + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_frechet_is_finite_when_covariances_are_singular():
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((10, 40)), rng.standard_normal((12, 40))
    assert np.isfinite(frechet_distance(x, z)) and frechet_distance(x, z) >= 0
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_proxy_a_distance_same_vs_separated():
    rng = np.random.default_rng(0)
    x, same = rng.standard_normal((300, 10)), rng.standard_normal((300, 10))
    far = rng.standard_normal((300, 10)) + 3.0
    assert proxy_a_distance(x, same, seed=0) < 0.3
    assert proxy_a_distance(x, far, seed=0) > 1.9


def test_proxy_a_distance_classifier_matches_sklearn_ridge():
    rng = np.random.default_rng(0)
    xtr = rng.standard_normal((80, 5)) + np.r_[np.zeros((40, 1)), np.ones((40, 1))] * 0.7
    ttr = np.repeat([-1.0, 1.0], 40)
    xte = rng.standard_normal((50, 5)) + 0.35
    scaler = StandardScaler().fit(xtr)
    ref = RidgeClassifier(alpha=1.0).fit(scaler.transform(xtr), ttr)
    expected = ref.predict(scaler.transform(xte))
    np.testing.assert_array_equal(_ridge_classify(xtr, ttr, xte, 1.0), expected)
    wide = rng.standard_normal((30, 60))        # more features than rows: dual solve
    ref = RidgeClassifier(alpha=1.0).fit(StandardScaler().fit_transform(wide[:20]),
                                         np.repeat([-1.0, 1.0], 10))
    scaler = StandardScaler().fit(wide[:20])
    np.testing.assert_array_equal(
        _ridge_classify(wide[:20], np.repeat([-1.0, 1.0], 10), wide[20:], 1.0),
        ref.predict(scaler.transform(wide[20:])))


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_interval_contains_value_and_shrinks_with_more_data():
    f, y = blobs(300, 8, sep=0.5)
    out = bootstrap(hscore, f, y, n_boot=60, seed=0, stratify=y)
    assert set(out) == {"value", "mean", "std", "lo", "hi"}
    assert out["lo"] <= out["value"] <= out["hi"] and out["std"] > 0
    assert out["value"] == pytest.approx(hscore(f, y))
    widths = []
    for n in (100, 1600):
        y = np.arange(n) % 3
        r = bootstrap(leep, source_outputs(y, noise=2.0), y, n_boot=60, stratify=y)
        assert r["lo"] <= r["value"] <= r["hi"]
        widths.append(r["hi"] - r["lo"])
    assert widths[1] < widths[0] / 2


def test_bootstrap_stratify_keeps_every_class_and_its_count():
    y = np.array([0] * 150 + [1] * 48 + [2] * 2)
    seen = []
    bootstrap(lambda yb: seen.append(np.bincount(yb, minlength=3)) or 0.0, y,
              n_boot=50, stratify=y)
    assert all((counts == [150, 48, 2]).all() for counts in seen)
    seen.clear()
    bootstrap(lambda yb: seen.append(np.bincount(yb, minlength=3)) or 0.0, y, n_boot=50)
    assert any(counts[2] == 0 for counts in seen)     # plain resampling can lose a class


def test_bootstrap_is_reproducible_and_handles_two_samples():
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((60, 3)), rng.standard_normal((40, 3)) + 1
    a = bootstrap(mmd, x, z, n_boot=20, seed=3, joint=False)
    assert a == bootstrap(mmd, x, z, n_boot=20, seed=3, joint=False)
    assert a["lo"] > 0
    with pytest.raises(DataError, match="equal lengths"):
        bootstrap(mmd, x, z, n_boot=20)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap(mmd, x, z, n_boot=1, joint=False)
    with pytest.raises(ConfigError, match="stratify"):
        bootstrap(mmd, x, z, joint=False, stratify=np.zeros(60))


# ----------------------------------------------------------------------------- registry

def test_registry_describes_every_score_and_runs_it():
    f, y = blobs(60, 4)
    probs = source_outputs(y)
    inputs = {"features": (f, y), "source_probs": (probs, y),
              "source_labels": (probs.argmax(1), y), "features_pair": (f, f[::-1] + 1)}
    assert set(SCORES) == {"logme", "leep", "nce", "hscore", "mmd", "frechet",
                           "proxy_a_distance"}
    for name, info in SCORES.items():
        assert info.name == name and info.meaning and "\n" not in info.meaning
        assert info.higher_is_better == (info.needs != "features_pair")
        assert isinstance(info.fn(*inputs[info.needs]), float)


# ----------------------------------------------------------------------------- bad inputs

F, Y = blobs(30, 4)
P = source_outputs(Y)
NAN = F.copy()
NAN[3, 1] = np.nan


@pytest.mark.parametrize("fn", [logme, hscore])
@pytest.mark.parametrize("args, match", [
    ((F, Y[:-1]), "30 rows but y has 29"),
    ((F, np.zeros(30)), "at least 2"),
    ((NAN, Y), "NaN"),
    ((F[:, 0], Y), "2-D"),
    ((F, np.eye(3)[Y]), "not one-hot"),
    ((F, np.where(Y == 0, np.nan, Y)), "NaN/inf labels"),
])
def test_feature_scores_reject_bad_input(fn, args, match):
    with pytest.raises(DataError, match=match):
        fn(*args)


@pytest.mark.parametrize("args, match", [
    ((P, Y[:-1]), "30 rows but y has 29"),
    ((P, np.zeros(30)), "at least 2"),
    ((np.where(P > 0.5, np.nan, P), Y), "NaN"),
    ((P[:, 0], Y), "2-D"),
    ((np.log(P), Y), "negative"),
    ((P * 2, Y), "sums to"),
])
def test_leep_rejects_bad_input(args, match):
    with pytest.raises(DataError, match=match):
        leep(*args)


@pytest.mark.parametrize("args, match", [
    ((P.argmax(1), Y[:-1]), "30 rows but y has 29"),
    ((P.argmax(1), np.zeros(30)), "at least 2"),
    ((P, Y), "1-D"),
])
def test_nce_rejects_bad_input(args, match):
    with pytest.raises(DataError, match=match):
        nce(*args)


@pytest.mark.parametrize("fn", [mmd, frechet_distance, proxy_a_distance])
@pytest.mark.parametrize("args, match", [
    ((F, F[:, :3]), "4 features per row but z has 3"),
    ((NAN, F), "NaN"),
    ((F[:, 0], F), "2-D"),
    ((F[:1], F), "at least 2 rows"),
])
def test_similarity_rejects_bad_input(fn, args, match):
    with pytest.raises(DataError, match=match):
        fn(*args)


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="bandwidth"):
        mmd(F, F, bandwidth=0)
    with pytest.raises(ConfigError, match="ridge"):
        proxy_a_distance(F, F, ridge=-1)
    with pytest.raises(ConfigError, match="folds"):
        proxy_a_distance(F, F, folds=1)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        logme(F, Y[:-1])


def test_constant_features_have_no_hscore():
    with pytest.raises(DataError, match="constant"):
        hscore(np.ones((30, 4)), Y)
