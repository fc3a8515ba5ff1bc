"""Transferability: rank source models on the target data before any training.

Scores (higher is better): ``logme``, ``leep``, ``nce``, ``hscore``. Domain distances between
a source reference sample and the target sample (lower is more similar): ``mmd``,
``frechet_distance``, ``proxy_a_distance``. ``bootstrap`` puts an interval on any of them,
and ``SCORES`` (registry.py) describes each one (what it needs, its direction, a one-line
meaning); `rank` computes the registered ranking scores for every candidate. The controls a
learned score must beat (``knn_accuracy``, ``prior_of``) and the yardstick they are judged by
(``probe_accuracy``) are in ``controls.py``.
"""
from __future__ import annotations

from .candidates import Candidate, parse_candidates
from .controls import knn_accuracy, prior_of, probe_accuracy
from .rank import RankResult, rank
from .recommend import Recommendation, decide, recommend
from .registry import SCORES, ScoreInfo, register_score
from .scores import bootstrap, hscore, ledoit_wolf, leep, logme, nce
from .similarity import frechet_distance, mmd, proxy_a_distance

__all__ = ["SCORES", "ScoreInfo", "register_score", "bootstrap", "frechet_distance", "hscore",
           "ledoit_wolf", "leep", "logme", "mmd", "nce", "proxy_a_distance", "Candidate",
           "parse_candidates", "RankResult", "Recommendation", "decide", "rank", "recommend",
           "knn_accuracy", "prior_of", "probe_accuracy"]
