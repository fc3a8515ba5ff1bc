"""The trainer's closed-form heads: a head phase on cached features (the probe's, on the
frozen features; a fresh head on a tuned body's), the plan's final head and its refit on
training + validation, and the features of a body as it is now. Fitted by headfit.py
(L-BFGS-B to convergence: no learning rate, no epochs); Trainer (loop.py) runs them."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import devices
from ..strategies import Phase
from . import distributed as dist
from .batches import Split
from .extract import extract_features
from .features import FeatureExtractor
from .headfit import fit_heads, fit_standardized_head, head_logits


class ClosedFormHeads:
    """Trainer's head fitting (a mixin: it reads the trainer's model, plan, settings, splits'
    features and mix, and writes its head and the figures the run reports)."""

    def _cached_phase(self, pi: int, phase: Phase, train: Split, val: Split) -> None:
        t0 = time.perf_counter()
        probe = not phase.fresh or self.probe_kept
        if probe:  # the frozen features: the probe's head, standardised
            f_train, f_val = train.features, val.features
        else:  # the backbone was tuned: its own features (fp32), never the frozen cache
            f_train, f_val = self._embed(train), self._embed(val)
        standardize = probe or self.standardize
        if pi == len(self.plan.phases) - 1:
            scores = self._final_head(f_train, f_val, train, val, standardize=standardize)
        else:
            scores, _ = self._fit_head(f_train, train.y, f_val, val.y, standardize=standardize)
        self._end_epoch(pi, 0, {"phase": phase.name, "epoch": 1, **scores}, t0, optimizer=None)

    @property
    def probe_kept(self) -> bool:
        """A pair plan whose mix kept 0: the probe, whose head is fitted on the frozen
        features, standardised (a mix of 0 is exactly the linear probe)."""
        return self.pairs and self.mix is not None and self.mix["alpha"] == 0

    def _final_head(self, f_train, f_val, train: Split, val: Split, *,
                    standardize: bool | None = None) -> dict:
        """Fit the plan's final head in closed form on the training features and keep its
        validation logits (the honest validation figures); then, unless --refit none, fit it
        again on training + validation features: the saved head learns from every label."""
        standardize = self.standardize if standardize is None else standardize
        both = len(val.y) and self.cfg.refit != "none"
        fits = [None]
        if both:  # the two fits are independent: fitted at once (the splits joined inside the
            # refit, no copy), the same heads as one after the other
            job = dict(num_classes=self.model.head.fc.out_features, C=self.cfg.C,
                       seed=self.cfg.seed, standardize=standardize)
            fits = fit_heads(dict(features=f_train, y=train.y, **job),
                             dict(features=[f_train, f_val], y=np.concatenate([train.y, val.y]),
                                  **job))
        scores, val_logits = self._fit_head(f_train, train.y, f_val, val.y,
                                            standardize=standardize, fitted=fits[0])
        if len(val.y):
            self.holdout_logits = val_logits
        if both:
            self.model.head.set_fit(*fits[1])
            scores["refit_on"] = len(f_train) + len(f_val)
        return scores

    def _refit_tuned_head(self, train: Split, val: Split) -> None:
        """After fine-tuning (and its mix): the final head in closed form on the kept body's
        features, as a probe's is, so that the saved model learns from the validation labels
        too (a mix of 0 is then exactly the linear probe). The body's features come from ONNX
        Runtime where it exports (a throw-away graph), else PyTorch."""
        t0 = time.perf_counter()
        if self.mix is not None and self.mix["alpha"] == 0:
            feats = (train.features, val.features)
        elif self.maps is not None:
            feats = (self.maps.features(self.model, "train"), self.maps.features(self.model, "val"))
        else:
            with dist.shared_tmpdir("headstart-onnx-") as tmp:
                feats = (self._embed(train, onnx_dir=tmp), self._embed(val, onnx_dir=tmp))
        scores = self._final_head(*feats, train, val)
        self.final_head = {**{k: v for k, v in scores.items() if k.startswith(("val_", "refit"))},
                           "seconds": round(time.perf_counter() - t0, 2)}
        if "val_acc" in scores:
            self.log(f"final head: fitted on the kept body's features of the training split "
                     f"(val_acc={scores['val_acc']:.4f})"
                     + (f", then of all {scores['refit_on']} examples" if "refit_on" in scores
                        else ""))
        else:
            self.log(f"final head: fitted on the kept body's features of all {len(train.y)} "
                     "examples")

    def _fit_head(self, f_train, y_train, f_val, y_val, *, standardize: bool | None = None,
                  fitted: tuple | None = None) -> tuple[dict, np.ndarray | None]:
        """Fit the head in closed form on features (or take `fitted`, that fit made already):
        (scores on both splits, val logits). Standardised or not as the plan's tuned heads are
        (self.standardize), unless told."""
        k = self.model.head.fc.out_features
        self.model.head.set_fit(*(fitted or fit_standardized_head(
            f_train, y_train, k, C=self.cfg.C, seed=self.cfg.seed,
            standardize=self.standardize if standardize is None else standardize)))
        W, b = (t.cpu() for t in self.model.head.raw_weights())
        row = loss_and_accuracy("train", head_logits(f_train, W, b), y_train)
        if not len(y_val):
            return row, None
        val_logits = head_logits(f_val, W, b)
        return {**row, **loss_and_accuracy("val", val_logits, y_val)}, val_logits

    def _embed(self, split: Split, *, onnx_dir: Path | None = None,
               judge: bool = False) -> np.ndarray:
        """Features of the backbone as it is now (no cache): eager PyTorch, or ONNX Runtime
        with its graph exported into `onnx_dir`. `judge`: features that only choose (an
        epoch's validation, a mix's), computed at the training's autocast precision, as its
        steps were; the features a saved head learns from are fp32, as prediction's are."""
        views = self.modality.views(self.cfg.flip)
        if not len(split.y):
            return np.zeros((0, views, self.model.backbone.feature_dim), np.float32)
        was = self.model.training
        engine = "torch" if onnx_dir is None else "auto"
        try:
            with devices.autocast(self.device, self.autocast if judge else None):
                ex = extract_features(split.ds, FeatureExtractor(self.model.backbone,
                                                                 engine=engine, onnx_dir=onnx_dir),
                                      self.pre, views=views, batch_size=self.cfg.batch_size * 2,
                                      progress=False, max_pixels=self.cfg.max_pixels)
        finally:
            self.model.train(was)
        return ex.features


def loss_and_accuracy(prefix: str, logits: np.ndarray, y: np.ndarray) -> dict:
    """{prefix}_loss (mean cross-entropy) and {prefix}_acc of logits against targets y."""
    t = torch.from_numpy(np.asarray(logits, np.float32))
    target = torch.from_numpy(np.asarray(y, np.int64))
    loss = float(nn.functional.cross_entropy(t, target))
    acc = float((t.argmax(1) == target).float().mean())
    return {f"{prefix}_loss": loss, f"{prefix}_acc": acc}
