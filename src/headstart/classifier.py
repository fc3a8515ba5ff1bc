"""TransferClassifier: a scikit-learn estimator over image paths, PIL images, arrays, or texts.

Its parameters are TrainConfig's options (the schema in training/config.py), plus `verbose`;
`__init__` only stores them, validation happens at `fit`, learned state ends in `_`. It works
in `clone`, `cross_val_score`, `GridSearchCV` and `Pipeline`; its inputs are images or texts,
not rows of numbers, which its tags say (see tests/test_classifier.py for the checks of
sklearn.utils.estimator_checks that apply and those that cannot).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFitted
from sklearn.utils.validation import check_is_fitted

from . import api
from .exceptions import HeadstartError
from .export import export_run
from .training.config import TrainConfig
from .training.options import options
from .training.rundir import RunWriter

POSITIONAL = ("backbone", "strategy")  # the rest are keyword-only


class NotFittedError(HeadstartError, _SklearnNotFitted):
    """predict before fit: scikit-learn's NotFittedError (a ValueError and an AttributeError),
    and one of headstart's errors. Defined beside the estimator, whose base classes are
    scikit-learn's: importing them is left to code that uses the estimator."""


def _parameters():
    """The estimator's __init__, made from the schema as dataclasses make theirs: it stores
    every option under its name (TrainConfig's defaults), and `verbose`."""
    specs = [(o.name, o.type, dataclasses.field(default=o.default,
                                                kw_only=o.name not in POSITIONAL))
             for o in options(TrainConfig)]
    specs.append(("verbose", "bool", dataclasses.field(default=True, kw_only=True)))
    return dataclasses.make_dataclass("TransferClassifierParameters", specs, repr=False,
                                      eq=False)


_PARAMETERS = _parameters()


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune or probe a pre-trained backbone on your images or texts.

    >>> clf = TransferClassifier(backbone="efficientnet_lite0", strategy="linear_probe")
    >>> clf.fit(paths, labels).predict(more_paths)
    >>> TransferClassifier(strategy="linear_probe").fit(texts, labels)  # backbone: minilm_l6

    backbone=None picks the default for the data: efficientnet_lite0 for images, minilm_l6 for
    texts. The parameters are those of `headstart train` (listed below), and verbose (progress
    bars and the run's log). Learned: classes_, history_, metrics_, input_size_, feature_dim_.
    """

    __init__ = _PARAMETERS.__init__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # inputs are images (paths, PIL images, HxW[xC] arrays) or texts, not rows of numbers
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    # learning -------------------------------------------------------------------------------
    def _config(self) -> TrainConfig:
        params = self.get_params()
        params.pop("verbose")
        return TrainConfig(**params)

    def fit(self, X, y) -> "TransferClassifier":
        labels = np.asarray(y)
        log = print if self.verbose else (lambda *_: None)
        trained = api.train(_as_list(X), labels=labels, config=self._config(),
                            progress=bool(self.verbose), log=log)
        classes = np.unique(labels)
        by_str = {str(c): c for c in classes.tolist()}
        trained.label_values = [by_str[c] for c in trained.classes]
        self.classes_ = classes
        self._set_learned(trained)
        return self

    def _set_learned(self, trained) -> None:
        self.trained_ = trained
        if not hasattr(self, "classes_"):
            self.classes_ = np.unique(np.asarray(trained.label_values or trained.classes))
        by_str = {str(c): i for i, c in enumerate(trained.classes)}
        self._columns = [by_str[str(c)] for c in self.classes_]
        self.history_ = trained.history
        self.metrics_ = trained.metrics
        self.input_size_ = trained.config.input_size
        self.feature_dim_ = trained.model.backbone.feature_dim

    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "trained_")
        except _SklearnNotFitted:
            raise NotFittedError("This TransferClassifier is not fitted yet; call fit(X, y) or "
                                 "TransferClassifier.load(run_dir) first") from None

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        return api.predict_probs(self.trained_, _as_list(X))[:, self._columns]

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.classes_[self.predict_proba(X).argmax(1)]

    # persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted classifier as a run directory; its parameters are kept with it,
        so TransferClassifier.load(path).get_params() is this estimator's get_params()."""
        self._check_fitted()
        writer = RunWriter(path, overwrite=overwrite)
        self.trained_.run_dir = api.save_run(self.trained_, writer, overwrite=overwrite,
                                             extra={"estimator": _plain(self.get_params())})
        return self.trained_.run_dir

    def export(self, path: str | Path | None = None, *, format: str = "onnx",
               **options) -> Path:
        """Write the fitted classifier as one ONNX file plus a JSON sidecar, checked against
        PyTorch (see `headstart export`); `path` defaults to RUN/model.onnx for a saved or
        loaded run, whose predictions then run in ONNX Runtime. Returns the file's path."""
        self._check_fitted()
        log = print if self.verbose else (lambda *_: None)
        return export_run(self.trained_, path, fmt=format, log=log, **options).path

    @classmethod
    def load(cls, path: str | Path) -> "TransferClassifier":
        """A fitted estimator from a run directory: the parameters it was saved with (a run
        from `headstart train` gives its resolved settings)."""
        trained = api.load(path)
        names = cls._get_param_names()
        saved = trained.stored.get("estimator")
        params = saved if isinstance(saved, dict) else trained.config.to_dict()
        clf = cls(**{k: v for k, v in params.items() if k in names})
        clf._set_learned(trained)
        return clf


TransferClassifier.__doc__ += "\n    Parameters\n    ----------\n" + "".join(
    f"    {o.name}: {o.type} = {o.default!r}\n        {o.spec.help}\n"
    for o in options(TrainConfig)) + "    verbose: bool = True\n        progress bars and " \
    "the run's log\n"


def _plain(params: dict) -> dict:
    """Parameters as YAML can hold them (numpy scalars from a parameter grid become plain)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}


def _as_list(X) -> list:
    """One path or text, or a sequence of images or texts (an (N,H,W[,C]) array is N images)."""
    return [X] if isinstance(X, (str, Path)) else list(X)
