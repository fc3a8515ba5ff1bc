"""`--refit full`: once validation has chosen how long to train, train again from the start on
the training and validation examples together, for exactly that long (AutoGluon's
"refit_full"). With a small labelled set the validation split is a fifth of every label the
user has; this way the saved model learns from all of them.

The validation figures of the run stay those of the model selected on the training split: the
refitted model has no held-out examples left to be judged on."""
from __future__ import annotations

import time

import numpy as np

from ..strategies import Plan, selected_plan
from .loop import Split, Trainer

REFIT_CHECKPOINT = "refit-checkpoint.pt"


class _RefitWriter:
    """The refit trainer's view of the run directory: its own checkpoint, and its epochs
    written to history.csv after those of the selection run."""

    def __init__(self, writer, before: list[dict]) -> None:
        self.writer, self.before = writer, list(before)

    def write_history(self, rows: list[dict]) -> None:
        self.writer.write_history(self.before + rows)

    def save_checkpoint(self, state: dict) -> None:
        self.writer.save_checkpoint(state, REFIT_CHECKPOINT)


def join_splits(a: Split, b: Split) -> Split:
    features = (None if a.features is None or b.features is None
                else np.concatenate([a.features, b.features]))
    return Split(a.ds.joined(b.ds), np.concatenate([a.y, b.y]), features)


def refit_full(make_model, plan: Plan, trainer: Trainer, train: Split, val: Split, *, pre, cfg,
               writer=None, progress: bool = True, log=print):
    """(model, history rows, info) of the plan validation chose, re-run from a fresh model on
    train + val; None when there is nothing to re-run (no validation split, or a probe, whose
    head the head refit has already fitted on every example, or a plan whose mix kept 0, which
    is that probe: the re-run would end at the same model, weight for weight)."""
    if all(p.cached for p in plan.phases):
        log("refit: the head was refitted on every example already; nothing more to train")
        return None
    if trainer.best_at is None or not len(val.y):
        log("refit: no validation examples, so the model already learned from every example")
        return None
    alpha = trainer.mix["alpha"] if trainer.mix else None
    if alpha == 0:  # the start of the mix, with its head refitted on every example: the probe
        log("refit: validation kept the probe (mix 0), whose head was refitted on every example "
            "already; training again would end at the same model")
        return None
    chosen = selected_plan(plan, trainer.best_at)
    both = join_splits(train, val)
    log(f"refit: training again on all {len(both.y)} examples (training + validation), as "
        "long as validation chose:")
    for phase in chosen.phases:
        log(f"phase {phase.describe()}")
    t0 = time.perf_counter()
    model = make_model()
    none = Split(val.ds.subset([]), val.y[:0],
                 None if val.features is None else val.features[:0])
    resume = writer.load_checkpoint(REFIT_CHECKPOINT) if writer is not None else None
    if resume:
        log(f"resuming the interrupted refit ({len(resume['history'])} epoch(s) done)")
    if alpha is not None:
        log(f"refit: then the mix validation chose ({alpha:g}) of the start and the end")
    refit = Trainer(model, chosen, pre=pre, cfg=cfg, progress=progress, log=log,
                    writer=_RefitWriter(writer, trainer.history) if writer is not None else None,
                    mix_alpha=alpha)
    rows = refit.fit(both, none, resume=resume)
    info = {"examples": len(both.y), "phases": [p.describe() for p in chosen.phases], "mix": alpha,
            "epochs": chosen.epochs, "seconds": round(time.perf_counter() - t0, 1)}
    return model, rows, info
