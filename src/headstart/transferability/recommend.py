"""From a ranking to advice: which candidate (a backbone, a cut of it, a checkpoint), trained
with `auto`, with the reason on one line (what `headstart rank` prints last and
`train --backbone auto` takes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backbones import get_config
from ..exceptions import ConfigError
from .rank import SCORE_NAMES, CandidateResult, RankResult, rank


@dataclass(frozen=True)
class Recommendation:
    """What `headstart train --backbone auto` needs: TrainConfig's backbone (NAME@GROUP for a
    cut), weights, strategy and unfreeze."""
    backbone: str
    weights: str | None
    strategy: str  # auto: how far to adapt is measured during training
    unfreeze: str
    reason: str
    candidate: str  # the table name of the chosen candidate
    by: str  # the score that chose it

    def train_options(self) -> dict:
        return {"backbone": self.backbone, "weights": self.weights, "strategy": self.strategy,
                "unfreeze": self.unfreeze}

    def __str__(self) -> str:
        weights = f" --weights {self.weights}" if self.weights else ""
        return (f"recommendation: --backbone {self.backbone}{weights} --strategy "
                f"{self.strategy} ({self.reason})")


def recommend(data, *, labels=None, log: Callable[[str], None] = print,
              **rank_options) -> Recommendation:
    """The best candidate by the ranking's score and how to train it, with the reason logged on
    one line. `data` is a RankResult, or data to `rank` first (with `rank_options`)."""
    result = data if isinstance(data, RankResult) else rank(data, labels=labels, log=log,
                                                             **rank_options)
    rec = decide(result)
    log(str(rec))
    return rec


def decide(result: RankResult) -> Recommendation:
    """The best candidate that is not the control, under the name `train` takes (a cut as
    NAME@GROUP), trained with `auto`: how far to adapt it (probe, fine-tuning or pairs, and the
    mix of the two) is then measured on validation during training, not guessed from the
    data's size. The reason says what the ranking saw: the margin over the random control and
    whether an earlier cut scores close to or above its whole network (a far domain)."""
    by = result.by
    real = [r for r in result.results if not r.candidate.random and r.scores[by] is not None]
    if not real:
        raise ConfigError(f"no candidate besides the random control has a {SCORE_NAMES[by]} "
                          "score; add pre-trained candidates or rank by logme")
    best, c = real[0], real[0].candidate
    n = int(np.median(list(result.per_class.values())))
    backbone = f"{c.backbone}@{c.cut}" if c.cut else c.backbone
    opts = dict(candidate=best.name, by=by, backbone=backbone, weights=c.weights,
                strategy="auto", unfreeze="all")
    score = f"{SCORE_NAMES[by]} {best.scores[by].value:.3f}"
    ctrl = next((r for r in result.results if r.candidate.random and r.scores[by]), None)
    how = ("train measures how far to adapt it (probe, then fine-tuning, mixed as validation "
           f"prefers) on your {n} examples per class")
    if ctrl and ctrl.scores[by].hi >= best.scores[by].lo:
        return Recommendation(reason=(
            f"{best.name} ({score}) is not clearly above random weights "
            f"({ctrl.scores[by].value:.3f}): little to transfer; {how}, and check against "
            "models without transfer with `headstart compare`"), **opts)
    far = _far_cut(result, best)
    if far is None:
        domain = "no earlier cut comes close to its whole network (near domain)"
    else:
        cut, full = far
        rel = "above" if cut.scores[by].value > full.scores[by].value else "close to"
        domain = (f"{cut.name} scores {rel} {full.name} ({cut.scores[by].value:.3f} vs "
                  f"{full.scores[by].value:.3f}): the late layers are specific to the source "
                  "task (far domain)")
    return Recommendation(reason=f"best {score}; {domain}; {how}", **opts)


def _far_cut(result: RankResult, best: CandidateResult):
    """(cut, its whole network) for the earliest cut within half the whole network's interval
    width of it, or above it: a cut of best's own network when it has one, else any."""
    by, rows = result.by, [r for r in result.results if r.scores[result.by] is not None]
    pairs = []
    for cut in (r for r in rows if r.candidate.cut and not r.candidate.random):
        full = next((r for r in rows if not r.candidate.cut
                     and r.candidate.network == cut.candidate.network), None)
        v = full.scores[by] if full else None
        if v and cut.scores[by].value >= v.value - (v.hi - v.lo) / 2:
            own = cut.candidate.network == best.candidate.network
            groups = get_config(cut.candidate.backbone).layer_groups
            pairs.append((not own, groups.index(cut.candidate.cut), cut, full))
    return min(pairs, key=lambda p: p[:2])[2:] if pairs else None
