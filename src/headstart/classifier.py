"""TransferClassifier: a scikit-learn-style estimator over image paths, PIL images, arrays, or
texts."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from . import api
from .exceptions import HeadstartError
from .training.config import TrainConfig
from .training.rundir import RunWriter


class TransferClassifier:
    """Fine-tune or probe a pre-trained backbone on your images or texts.

    >>> clf = TransferClassifier(backbone="efficientnet_lite0", strategy="linear_probe")
    >>> clf.fit(paths, labels).predict(more_paths)
    >>> TransferClassifier(strategy="linear_probe").fit(texts, labels)  # backbone: minilm_l6

    backbone=None picks the default for the data: efficientnet_lite0 for images, minilm_l6 for
    texts.
    Parameters are those of `headstart train` (see TrainConfig); learned state ends in `_`.
    """

    def __init__(self, backbone: str | None = None, strategy: str = "auto", *,
                 epochs: int = 5, lr: float | None = None, unfreeze: str = "all",
                 cut: str = "auto",
                 image_size: int | str = "auto", batch_size: int = 32, val_fraction: float = 0.2,
                 seed: int = 0, patience: int = 3, flip: bool = True, augment: bool = True,
                 C: float = 1.0, weights: str | None = None, skip_bad: bool = False,
                 truncate: bool = False, layers: int | str = 1, refit: str = "head",
                 verbose: bool = True) -> None:
        self.backbone, self.strategy, self.epochs, self.lr = backbone, strategy, epochs, lr
        self.unfreeze, self.image_size, self.batch_size = unfreeze, image_size, batch_size
        self.cut = cut
        self.val_fraction, self.seed, self.patience, self.flip = val_fraction, seed, patience, flip
        self.augment, self.C, self.weights, self.skip_bad = augment, C, weights, skip_bad
        self.truncate, self.layers, self.verbose = truncate, layers, verbose
        self.refit = refit

    # scikit-learn's parameter protocol ---------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "TransferClassifier":
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"Invalid parameter {k!r} for TransferClassifier; valid: "
                                 f"{', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if defaults[k].default != v]
        return f"TransferClassifier({', '.join(changed)})"

    # learning -----------------------------------------------------------------------------
    def _config(self) -> TrainConfig:
        params = self.get_params()
        params.pop("verbose")
        return TrainConfig(**params)

    def fit(self, X, y) -> "TransferClassifier":
        labels = np.asarray(y)
        self.classes_ = np.unique(labels)
        log = print if self.verbose else (lambda *_: None)
        self.trained_ = api.train(_as_list(X), labels=labels, config=self._config(),
                                  progress=self.verbose, log=log)
        by_str = {str(c): c for c in self.classes_.tolist()}
        self.trained_.label_values = [by_str[c] for c in self.trained_.classes]
        self._set_learned()
        return self

    def _set_learned(self) -> None:
        t = self.trained_
        if not hasattr(self, "classes_"):
            self.classes_ = np.unique(np.asarray(t.label_values or t.classes))
        by_str = {str(c): i for i, c in enumerate(t.classes)}
        self._columns = [by_str[str(c)] for c in self.classes_]
        self.history_ = t.history
        self.metrics_ = t.metrics
        self.image_size_ = t.config.image_size
        self.n_features_in_ = t.model.backbone.feature_dim

    def _check_fitted(self) -> None:
        if not hasattr(self, "trained_"):
            raise HeadstartError("This TransferClassifier is not fitted yet; call fit(X, y) "
                                 "or TransferClassifier.load(run_dir) first")

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        return api.predict_probs(self.trained_, _as_list(X))[:, self._columns]

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # persistence -------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        self._check_fitted()
        return api.save_run(self.trained_, RunWriter(path, overwrite=overwrite),
                            overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "TransferClassifier":
        trained = api.load(path)
        cfg = trained.config.to_dict()
        names = cls._param_names()
        clf = cls(**{k: v for k, v in cfg.items() if k in names})
        clf.trained_ = trained
        clf._set_learned()
        return clf


def _as_list(X) -> list:
    """One path or text, or a sequence of images or texts (an (N,H,W[,C]) array is N images)."""
    return [X] if isinstance(X, (str, Path)) else list(X)
