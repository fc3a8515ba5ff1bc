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


# -- scikit-learn's conventions ---------------------------------------------------------------
import pickle  # noqa: E402

from sklearn.base import BaseEstimator, ClassifierMixin, is_classifier  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils import estimator_checks as checks  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from headstart import NotFittedError, TrainConfig  # noqa: E402
from headstart.training.options import options  # noqa: E402

LP = dict(TINY, strategy="linear_probe")

# The checks of sklearn.utils.estimator_checks that apply to an estimator whose inputs are
# images or texts: they exercise the parameter protocol, cloning, tags and unfitted use.
APPLICABLE = ["check_parameters_default_constructible", "check_no_attributes_set_in_init",
              "check_get_params_invariance", "check_set_params", "check_estimator_repr",
              "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params",
              "check_mixin_order", "check_estimator_tags_renamed", "check_valid_tag_types"]
# Every other check scikit-learn runs on a classifier, and why it cannot apply here. The
# tabular ones have counterparts below on image arrays (fit returns self, pickling, seeded
# refits, predictions independent of the batch, clone, pipelines, check_is_fitted).
_TABULAR = ("fits or predicts on rows of numeric features (make_blobs, iris), which are "
            "neither images nor texts: TransferClassifier's inputs are image paths, PIL "
            "images, HxW[xC] arrays or strings (its tags say two_d_array=False)")
NOT_APPLICABLE = {
    **{name: _TABULAR for name in [
        "check_classifiers_train", "check_classifiers_classes",
        "check_classifier_data_not_an_array", "check_classifiers_one_label",
        "check_classifiers_regression_target", "check_complex_data",
        "check_decision_proba_consistency", "check_dict_unchanged",
        "check_dont_overwrite_parameters", "check_dtype_object", "check_estimators_dtypes",
        "check_estimators_empty_data_messages", "check_estimators_fit_returns_self",
        "check_estimators_nan_inf", "check_estimators_overwrite_params",
        "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit1d",
        "check_fit2d_1feature", "check_fit2d_1sample", "check_fit2d_predict1d",
        "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
        "check_methods_sample_order_invariance", "check_methods_subset_invariance",
        "check_n_features_in", "check_n_features_in_after_fitting",
        "check_pipeline_consistency", "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input", "check_requires_y_none", "check_supervised_y_2d",
        "check_supervised_y_no_nan"]},
    **{name: "sparse matrices are not images or texts" for name in [
        "check_estimator_sparse_array", "check_estimator_sparse_matrix",
        "check_estimator_sparse_tag"]},
    **{name: "the model runs in PyTorch on its own inputs; it does not dispatch on the Array "
       "API" for name in ["check_array_api_input", "check_array_api_mixed_inputs",
                          "check_array_api_same_namespace"]},
    **{name: "fit takes no sample_weight" for name in [
        "check_sample_weights_list", "check_sample_weights_not_an_array",
        "check_sample_weights_not_overwritten", "check_sample_weights_pandas_series",
        "check_sample_weights_shape", "check_all_zero_sample_weights_error",
        "check_classifiers_one_label_sample_weights",
        "check_sample_weight_equivalence_on_dense_data",
        "check_sample_weight_equivalence_on_sparse_data"]},
    **{name: "there is no class_weight parameter" for name in [
        "check_class_weight_classifiers", "check_class_weight_balanced_linear_classifier"]},
    "check_estimators_partial_fit_n_features": "there is no partial_fit",
    "check_sparsify_coefficients": "no linear model's coef_ to sparsify",
    "check_non_transformer_estimators_n_iter": "no solver's n_iter_ to report",
}


def to_uint8(X):
    """A pipeline step: float images in [0, 1] to uint8."""
    return (np.asarray(X) * 255).round().astype(np.uint8)


def test_is_a_scikit_learn_classifier():
    clf = TransferClassifier(**TINY)
    assert isinstance(clf, BaseEstimator) and isinstance(clf, ClassifierMixin)
    assert is_classifier(clf)
    tags = clf.__sklearn_tags__()
    assert tags.estimator_type == "classifier" and not tags.input_tags.two_d_array
    assert tags.input_tags.string


@pytest.mark.parametrize("name", APPLICABLE)
def test_the_estimator_checks_that_apply(name):
    getattr(checks, name)("TransferClassifier", TransferClassifier(**TINY))


def test_every_check_of_a_classifier_is_applied_or_said_why_not():
    from sklearn.linear_model import LogisticRegression

    ran = {getattr(c, "func", c).__name__
           for c in checks._yield_all_checks(LogisticRegression(), legacy=True)}
    assert ran - set(APPLICABLE) - set(NOT_APPLICABLE) == set()
    assert not set(APPLICABLE) & set(NOT_APPLICABLE)


def test_parameters_are_the_training_options():
    names = [o.name for o in options(TrainConfig)]
    assert list(TransferClassifier().get_params()) == sorted(names + ["verbose"])
    for extra in ("l2sp", "bn_stats", "precision", "max_pixels", "cut", "workers", "layers"):
        assert extra in names
    assert TransferClassifier(l2sp=0.1)._config().l2sp == 0.1


def test_not_fitted_error_is_scikit_learns_and_ours():
    from sklearn.exceptions import NotFittedError as Sklearns
    with pytest.raises(NotFittedError) as e:
        TransferClassifier(**TINY).predict_proba(np.zeros((1, 32, 32, 3), np.uint8))
    assert isinstance(e.value, Sklearns) and isinstance(e.value, HeadstartError)
    with pytest.raises(Sklearns):
        check_is_fitted(TransferClassifier(**TINY))


def test_fit_returns_self_and_refits_the_same(arrays, fitted):
    X, y = arrays
    clf = TransferClassifier(**LP)
    assert clf.fit(X, y) is clf
    check_is_fitted(clf)
    np.testing.assert_allclose(clf.predict_proba(X), fitted.predict_proba(X), atol=1e-6)


def test_predictions_do_not_depend_on_the_batch(fitted, arrays):
    X, _ = arrays
    whole = fitted.predict_proba(X)
    np.testing.assert_allclose(fitted.predict_proba(X[5:9]), whole[5:9], atol=1e-6)
    np.testing.assert_allclose(fitted.predict_proba(X[::-1]), whole[::-1], atol=1e-6)


def test_pickle_round_trip(fitted, arrays):
    X, _ = arrays
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(back.predict_proba(X), fitted.predict_proba(X), atol=1e-6)
    assert back.get_params() == fitted.get_params()


def test_cross_val_score_grid_search_and_pipeline(arrays):
    X, y = arrays
    scores = cross_val_score(TransferClassifier(**LP), X, y, cv=2)
    assert scores.shape == (2,) and (scores >= 0.75).all()
    grid = GridSearchCV(TransferClassifier(**LP), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    assert grid.best_params_["C"] in (0.1, 1.0) and grid.score(X, y) >= 0.9
    assert isinstance(grid.best_estimator_, TransferClassifier)
    pipe = make_pipeline(FunctionTransformer(to_uint8), TransferClassifier(**LP))
    floats = X / 255.0
    assert pipe.fit(floats, y).score(floats, y) >= 0.9


def test_get_params_round_trip_through_save_and_load(arrays, tmp_path):
    X, y = arrays
    clf = TransferClassifier(strategy="linear_probe", C=np.float64(0.5), seed=np.int64(3),
                             **{k: v for k, v in TINY.items()}).fit(X, y)
    back = TransferClassifier.load(clf.save(tmp_path / "clf"))
    assert back.get_params() == clf.get_params()
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), atol=1e-5)


def test_load_of_a_command_line_run_takes_its_resolved_settings(tiny_runs):
    back = TransferClassifier.load(tiny_runs["linear_probe"])
    assert back.backbone == "tiny_cnn" and back.strategy == "linear_probe"
    assert back.input_size == back.input_size_ == 32
