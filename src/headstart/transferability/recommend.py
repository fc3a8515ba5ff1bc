"""From a ranking to advice: which candidate, which strategy and how deep to fine-tune, with
the reason on one line (what `headstart rank` prints last and `train --backbone auto` takes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backbones import get_config
from ..exceptions import ConfigError
from .candidates import Candidate
from .rank import SCORE_NAMES, CandidateResult, RankResult, rank

SMALL_PER_CLASS = 100  # below: a linear probe on frozen features (when the domain is near)
LARGE_PER_CLASS = 1000  # from here: fine-tune every group
# below, with a text encoder: the pair objective (`contrastive`) on every layer, then the head.
# SetFit (Tunstall et al., 2022) reports its largest gains over a head on frozen sentence
# embeddings at 8-16 examples per class, shrinking by 64. It retunes every layer, which a far
# domain asks for too; an epoch costs about 16 pair steps while the data are this small.
FEW_SHOT_TEXT = 32


@dataclass(frozen=True)
class Recommendation:
    """What `headstart train --backbone auto` needs: TrainConfig's backbone, weights, strategy
    and unfreeze (top N layer groups, or "all"; ignored by linear_probe)."""
    backbone: str
    weights: str | None
    strategy: str  # linear_probe | fine_tune | contrastive
    unfreeze: str
    reason: str
    candidate: str  # the table name of the chosen candidate
    by: str  # the score that chose it

    def train_options(self) -> dict:
        return {"backbone": self.backbone, "weights": self.weights, "strategy": self.strategy,
                "unfreeze": self.unfreeze}

    def __str__(self) -> str:
        depth = "" if self.strategy == "linear_probe" else f" --unfreeze {self.unfreeze}"
        weights = f" --weights {self.weights}" if self.weights else ""
        return (f"recommendation: --backbone {self.backbone}{weights} --strategy "
                f"{self.strategy}{depth} ({self.reason})")


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
    """The best candidate that is not the control; the pair objective for few texts per class,
    else a linear probe or fine-tuning from the data per class and from whether an earlier cut
    scores close to or above its whole network (then the late layers are specific to the
    source task: a far domain, fine-tune deeper)."""
    by = result.by
    real = [r for r in result.results if not r.candidate.random and r.scores[by] is not None]
    if not real:
        raise ConfigError(f"no candidate besides the random control has a {SCORE_NAMES[by]} "
                          "score; add pre-trained candidates or rank by logme")
    best, c = real[0], real[0].candidate
    n = int(np.median(list(result.per_class.values())))
    opts = dict(candidate=best.name, by=by, backbone=c.backbone, weights=c.weights)
    score = f"{SCORE_NAMES[by]} {best.scores[by].value:.3f}"
    ctrl = next((r for r in result.results if r.candidate.random and r.scores[by]), None)
    if ctrl and ctrl.scores[by].hi >= best.scores[by].lo:
        return Recommendation(strategy="fine_tune", unfreeze="all", reason=(
            f"{best.name} ({score}) is not clearly above random weights "
            f"({ctrl.scores[by].value:.3f}): little to transfer; fine-tune everything and check "
            "against scratch with `headstart compare`"), **opts)
    groups = [g for g in get_config(c.backbone).layer_groups if g != "pooling"]
    far = _far_cut(result, best)
    if n < FEW_SHOT_TEXT and get_config(c.backbone).modality == "text":
        domain = ("no earlier cut comes close (near domain)" if far is None else
                  f"{far[0].name} scores close to or above {far[1].name} (far domain)")
        return Recommendation(strategy="contrastive", unfreeze="all", reason=(
            f"best {score}; {domain}; {n} examples per class of text: tune every layer on "
            "pairs of examples, then fit the head"), **opts)
    if far is None:
        k = "all" if n >= LARGE_PER_CLASS else 2
        what = ("a linear probe on frozen features" if n < SMALL_PER_CLASS else
                f"fine-tune {'every group' if k == 'all' else 'the top 2 layer groups'}")
        return Recommendation(strategy="linear_probe" if n < SMALL_PER_CLASS else "fine_tune",
                              unfreeze=_unfreeze(c.backbone, k), reason=(
            f"best {score}; no earlier cut comes close, so its late layers suit this data (near "
            f"domain); {n} examples per class: {what}"), **opts)
    cut, full = far
    after = groups[_cut_index(cut.candidate, groups) + 1:]
    k = "all" if n >= LARGE_PER_CLASS or len(after) >= len(groups) - 1 else len(after)
    how = "above" if cut.scores[by].value > full.scores[by].value else "close to"
    return Recommendation(strategy="fine_tune", unfreeze=_unfreeze(c.backbone, k), reason=(
        f"{cut.name} scores {how} {full.name} ({cut.scores[by].value:.3f} vs "
        f"{full.scores[by].value:.3f}): the late layers are specific to the source task (far "
        f"domain); {n} examples per class: fine-tune "
        f"{'every group' if k == 'all' else ', '.join(after)} of {c.backbone}"),
        **opts)


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


def _cut_index(cut: Candidate, groups: list[str]) -> int:
    """Where a cut (maybe of another network of the family) falls in `groups`."""
    if cut.cut in groups:
        return groups.index(cut.cut)
    own = [g for g in get_config(cut.backbone).layer_groups if g != "pooling"]
    return round(own.index(cut.cut) / max(1, len(own) - 1) * (len(groups) - 1))


def _unfreeze(backbone: str, k) -> str:
    """TrainConfig.unfreeze for the last `k` weighted groups ("all" stays "all"): it counts
    groups from the end, a text encoder's weightless pooling group included."""
    if k == "all":
        return "all"
    groups = get_config(backbone).layer_groups
    return str(k + sum(g == "pooling" for g in groups))
