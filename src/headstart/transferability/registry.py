"""The registry of transferability measures: what each needs, its direction, its meaning; the
ranking's columns are the scores registered with `ranks` (rank.py reads them)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .scores import hscore, hscore_rows, leep, logme, nce
from .similarity import frechet_distance, mmd, proxy_a_distance

Needs = Literal["features", "source_probs", "source_labels", "features_pair"]


@dataclass(frozen=True)
class ScoreInfo:
    """One registered measure. ``fn`` takes (features, y), (source_probs, y),
    (source_labels, y) or, for ``features_pair``, (source_features, target_features).
    ``ranks``: a column of `headstart rank` (labelled ``label``); ``on_rows(x, y, idx)``, when
    given, scores rows ``idx`` faster than ``fn(x[idx], y[idx])``, to the same value."""
    name: str
    fn: Callable[..., float]
    needs: Needs
    higher_is_better: bool
    meaning: str
    label: str = ""
    ranks: bool = False
    on_rows: Callable[..., float] | None = None


SCORES: dict[str, ScoreInfo] = {}


def register_score(info: ScoreInfo) -> ScoreInfo:
    SCORES[info.name] = info
    return info


def ranking_scores() -> dict[str, ScoreInfo]:
    """The scores `rank` computes for every candidate, in the table's order."""
    return {name: info for name, info in SCORES.items() if info.ranks}


for _info in [
    ScoreInfo("logme", logme, "features", True,
              "how well a linear model on the features explains the labels (log evidence)",
              label="LogME", ranks=True),
    ScoreInfo("hscore", hscore, "features", True,
              "how far apart the class means are relative to the feature spread",
              label="H-score", ranks=True, on_rows=hscore_rows),
    ScoreInfo("leep", leep, "source_probs", True,
              "how well the source classifier's outputs predict the target labels",
              label="LEEP", ranks=True),
    ScoreInfo("nce", nce, "source_labels", True,
              "how much the source model's predicted class tells about the target label",
              label="NCE", ranks=True),
    ScoreInfo("mmd", mmd, "features_pair", False,
              "kernel distance between source and target feature distributions"),
    ScoreInfo("frechet", frechet_distance, "features_pair", False,
              "distance between Gaussians fitted to source and target features"),
    ScoreInfo("proxy_a_distance", proxy_a_distance, "features_pair", False,
              "how easily a linear classifier tells source from target (0 to 2)"),
]:
    register_score(_info)
