"""Transferability: rank source models on the target data before any training.

Scores (higher is better): ``logme``, ``leep``, ``nce``, ``hscore``. Domain distances between
a source reference sample and the target sample (lower is more similar): ``mmd``,
``frechet_distance``, ``proxy_a_distance``. ``bootstrap`` puts an interval on any of them,
and ``SCORES`` describes each one (what it needs, its direction, a one-line meaning). The
controls a learned score must beat (``knn_accuracy``, ``prior_of``) and the yardstick they are
judged by (``probe_accuracy``) are in ``controls.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .scores import bootstrap, hscore, ledoit_wolf, leep, logme, nce
from .similarity import frechet_distance, mmd, proxy_a_distance

Needs = Literal["features", "source_probs", "source_labels", "features_pair"]


@dataclass(frozen=True)
class ScoreInfo:
    """One registered measure. ``fn`` takes (features, y), (source_probs, y),
    (source_labels, y) or, for ``features_pair``, (source_features, target_features)."""
    name: str
    fn: Callable[..., float]
    needs: Needs
    higher_is_better: bool
    meaning: str


SCORES: dict[str, ScoreInfo] = {info.name: info for info in [
    ScoreInfo("logme", logme, "features", True,
              "how well a linear model on the features explains the labels (log evidence)"),
    ScoreInfo("leep", leep, "source_probs", True,
              "how well the source classifier's outputs predict the target labels"),
    ScoreInfo("nce", nce, "source_labels", True,
              "how much the source model's predicted class tells about the target label"),
    ScoreInfo("hscore", hscore, "features", True,
              "how far apart the class means are relative to the feature spread"),
    ScoreInfo("mmd", mmd, "features_pair", False,
              "kernel distance between source and target feature distributions"),
    ScoreInfo("frechet", frechet_distance, "features_pair", False,
              "distance between Gaussians fitted to source and target features"),
    ScoreInfo("proxy_a_distance", proxy_a_distance, "features_pair", False,
              "how easily a linear classifier tells source from target (0 to 2)"),
]}

from .candidates import Candidate, parse_candidates  # noqa: E402
from .controls import knn_accuracy, prior_of, probe_accuracy  # noqa: E402
from .rank import RankResult, rank  # noqa: E402
from .recommend import Recommendation, decide, recommend  # noqa: E402

__all__ = ["SCORES", "ScoreInfo", "bootstrap", "frechet_distance", "hscore", "ledoit_wolf",
           "leep", "logme", "mmd", "nce", "proxy_a_distance", "Candidate", "parse_candidates",
           "RankResult", "Recommendation", "decide", "rank", "recommend", "knn_accuracy",
           "prior_of", "probe_accuracy"]
