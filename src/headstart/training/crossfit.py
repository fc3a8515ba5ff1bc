"""More evidence for the mix where validation is small: the plan run again on other folds of
the training pool, so that how far to adapt is decided on every example instead of a fifth.

The mix rule (mixing.py) keeps the probe unless adapting wins by more than one standard error
of the paired difference on the validation examples. On a few dozen of them that error is
several points: a fine-tune that beats its probe by 3 to 6 points on every dev split (a source
model you pre-trained, transferred to scikit-learn's digits at 10 per class:
benchmarks/README.md) was judged on 20 validation images, where one image is 5 points, and the
rule kept the probe every time. Where validation holds fewer than CROSS_FIT_BELOW examples,
the plan is run again on FOLDS more folds of the training split (stratified, scikit-learn's
StratifiedKFold), each holding out its fold: with the run's own validation split, every example
of the pool is held out once, and each mix is judged on all of them (its right/wrong flags
joined, the one-standard-error rule over the pool). The run's model is still the one trained on
its own split; only the choice of the mix uses the folds. The cost is FOLDS more trainings of a
small dataset (fewer than CROSS_FIT_BELOW / val_fraction examples).

Not under the pair objective (whose rule keeps the tuned end unless validation shows the
probe clearly better), not under torchrun, and not where the mix is replayed (--refit full).
"""
from __future__ import annotations

import numpy as np
import torch

from . import distributed as dist
from .batches import Split

CROSS_FIT_BELOW = 100  # validation examples under which the mix is decided on the folds too
FOLDS = 4  # more folds of the training split (the run's own validation split is one more)


def folds_of(train: Split, val: Split, *, seed: int) -> list[tuple[Split, Split]]:
    """(training, held-out) splits of the pool (train + val) where each held-out part is a
    stratified fold of `train`; [] where a class has fewer than 2 training examples."""
    from sklearn.model_selection import StratifiedKFold  # deferred: scikit-learn's import
    counts = np.bincount(train.y)
    k = min(FOLDS, int(counts[counts > 0].min()))
    if k < 2:
        return []
    ds = train.ds.joined(val.ds)
    y = np.concatenate([train.y, val.y])
    feats = (None if train.features is None or val.features is None
             else np.concatenate([train.features, val.features]))
    n_val = np.arange(len(train.y), len(y))

    def part(idx):
        return Split(ds.subset(idx.tolist()), y[idx], None if feats is None else feats[idx])

    out = []
    kfold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for rest, held in kfold.split(np.zeros(len(train.y)), train.y):
        out.append((part(np.concatenate([rest, n_val])), part(held)))
    return out


def eligible(trainer, val: Split) -> bool:
    """Whether this run's mix is decided on folds too (see the module's docstring)."""
    return (trainer.plan.mix and not trainer.pairs and trainer.mix_alpha is None
            and 0 < len(val.y) < CROSS_FIT_BELOW and dist.world() == 1)


def evidence(make_trainer, train: Split, val: Split, *, seed: int, log) -> list[dict]:
    """Each fold's mix evidence ({alpha: {right, val_loss}} on its held-out part), from a
    fresh trainer (`make_trainer()`: the run's model, plan and settings, writing nothing) run
    on each fold. The process's random state is as it was afterwards."""
    folds = folds_of(train, val, seed=seed)
    if not folds:
        return []
    log(f"mix: validation has {len(val.y)} examples (under {CROSS_FIT_BELOW}): the plan is run "
        f"on {len(folds)} more folds of the training split, so that each mix is judged on all "
        f"{len(train.y) + len(val.y)}")
    out = []
    with torch.random.fork_rng(devices=[]):
        for i, (tr, held) in enumerate(folds, 1):
            t = make_trainer()
            t.fit(tr, held)
            if t.mix_evidence:
                out.append(t.mix_evidence)
            log(f"  fold {i} of {len(folds)}: held out {len(held.y)}, mix "
                + ("-" if t.mix is None else f"{t.mix['alpha']:g}"))
    return out

