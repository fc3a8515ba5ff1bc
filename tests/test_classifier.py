"""TransferClassifier, the scikit-learn-style estimator."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone

from conftest import pattern_image
from headstart import DataError, HeadstartError, TransferClassifier

TINY = dict(backbone="tiny_cnn", input_size=32, epochs=1, verbose=False)


@pytest.fixture(scope="module")
def arrays():
    """16 learnable HxWx3 uint8 images with integer labels 2 and 10 (whose string forms sort
    the other way round: '10' < '2')."""
    rng = np.random.default_rng(11)
    y = np.array([2, 10] * 8)
    X = np.stack([pattern_image(int(c == 10), rng) for c in y])
    return X, y


@pytest.fixture(scope="module")
def fitted(arrays):
    X, y = arrays
    return TransferClassifier(strategy="linear_probe", **TINY).fit(X, y)


def test_get_params_and_clone():
    clf = TransferClassifier(strategy="scratch", lr=0.01, **TINY)
    params = clf.get_params()
    assert params["strategy"] == "scratch" and params["lr"] == 0.01
    assert params["backbone"] == "tiny_cnn" and params["verbose"] is False
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    assert not hasattr(twin, "trained_")
    assert "strategy='scratch'" in repr(clf) and "C=" not in repr(clf)


def test_set_params():
    clf = TransferClassifier(**TINY)
    assert clf.set_params(epochs=3, C=0.5) is clf
    assert clf.epochs == 3 and clf.C == 0.5
    with pytest.raises(ValueError, match="Invalid parameter 'epoch'"):
        clf.set_params(epoch=3)


def test_clone_of_fitted_is_unfitted(fitted):
    twin = clone(fitted)
    assert not hasattr(twin, "trained_") and not hasattr(twin, "classes_")
    with pytest.raises(HeadstartError, match="not fitted"):
        twin.predict_proba(np.zeros((1, 32, 32, 3), np.uint8))


def test_unfitted_predict_says_not_fitted():
    with pytest.raises(HeadstartError, match="not fitted"):
        TransferClassifier(**TINY).predict(np.zeros((1, 32, 32, 3), np.uint8))


def test_integer_labels_keep_their_type_and_order(fitted, arrays):
    X, y = arrays
    assert fitted.classes_.tolist() == [2, 10]
    assert np.issubdtype(fitted.classes_.dtype, np.integer)
    pred = fitted.predict(X)
    assert np.issubdtype(pred.dtype, np.integer)
    assert (pred == y).mean() >= 0.9
    assert fitted.score(X, y) == pytest.approx((pred == y).mean())


def test_predict_proba_columns_follow_classes(fitted, arrays):
    X, y = arrays
    proba = fitted.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (fitted.classes_[proba.argmax(1)] == fitted.predict(X)).all()
    assert proba[y == 10, 1].mean() > 0.5 and proba[y == 2, 0].mean() > 0.5


def test_learned_attributes(fitted):
    assert fitted.input_size_ == 32 and fitted.feature_dim_ == 32
    assert len(fitted.history_) == 1 and "val_accuracy" in fitted.metrics_


def test_fit_on_paths_and_pil_images(arrays, tmp_path):
    X, y = arrays
    paths = []
    for i, a in enumerate(X):
        p = tmp_path / f"{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    labels = np.where(y == 2, "dog", "cat")
    clf = TransferClassifier(strategy="linear_probe", **TINY).fit(paths, labels)
    assert clf.classes_.tolist() == ["cat", "dog"]
    assert clf.score(paths, labels) >= 0.9
    pil = [Image.fromarray(a) for a in X]
    assert (clf.predict(pil) == clf.predict(paths)).all()
    assert clf.predict(paths[0]).tolist() == [labels[0]]  # one path, not a list of characters
    clf2 = TransferClassifier(strategy="linear_probe", **TINY).fit(pil, labels)
    assert clf2.score(X, labels) >= 0.9


def test_fit_on_grey_arrays(arrays):
    X, y = arrays
    grey = X.mean(axis=3).astype(np.uint8)  # (n, H, W)
    clf = TransferClassifier(strategy="linear_probe", **TINY).fit(grey, y)
    assert clf.predict(grey).shape == (16,)


def test_fit_validates_at_fit(arrays):
    X, y = arrays
    clf = TransferClassifier(strategy="no_such_strategy", **TINY)  # __init__ only stores
    with pytest.raises(HeadstartError, match="unknown strategy"):
        clf.fit(X, y)
    with pytest.raises(DataError, match="16 images but 15 labels"):
        TransferClassifier(**TINY).fit(X, y[:15])


def test_fine_tune_fits(arrays):
    X, y = arrays
    clf = TransferClassifier(strategy="fine_tune", **TINY).fit(X, y)
    assert [r["phase"] for r in clf.history_] == ["head", "fine_tune"]
    assert clf.predict(X[:3]).tolist() == y[:3].tolist()


def test_save_and_load_predict_the_same(arrays, tmp_path):
    X, _ = arrays
    y = np.array(["b", "a"] * 8)
    clf = TransferClassifier(strategy="linear_probe", **TINY).fit(X, y)
    run = clf.save(tmp_path / "clf")
    assert (run / "model.safetensors").is_file()
    back = TransferClassifier.load(run)
    assert back.strategy == "linear_probe" and back.backbone == "tiny_cnn"
    assert back.classes_.tolist() == ["a", "b"]
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-4,
                               atol=1e-6)
    with pytest.raises(HeadstartError, match="--overwrite"):
        clf.save(tmp_path / "clf")
    assert clf.save(tmp_path / "clf", overwrite=True) == run


def test_save_and_load_keep_integer_labels(fitted, arrays, tmp_path):
    X, y = arrays
    back = TransferClassifier.load(fitted.save(tmp_path / "ints"))
    assert back.classes_.tolist() == [2, 10]
    assert back.predict(X).tolist() == fitted.predict(X).tolist()
