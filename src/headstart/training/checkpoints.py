"""A trainer's checkpoints: when one is written, what it holds, and how a resumed run takes it
back. The run directory (rundir.py) writes and reads the file; the trainer (loop.py) asks
`Checkpoints.due` and calls `Checkpoints.save` at an epoch's end, and `restore` when it
resumes."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import devices
from .rundir import RunWriter, shared_tensors

# A checkpoint is written at the end of every phase, and at the end of an epoch once the work
# since the last one has taken CHECKPOINT_EVERY times as long as that one took to write: a
# killed run then redoes at most that much work, and checkpoints take at most about
# 1/CHECKPOINT_EVERY of a run. Epochs of long runs are each checkpointed; a few-shot text run
# (2.6 s epochs, 0.9 s to write 22M weights, their start and Adam's moments) skips some.
CHECKPOINT_EVERY = 10


class Checkpoints:
    """The checkpoints of one trainer's run, written through `writer`."""

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer
        self.saved_at, self.save_seconds = time.perf_counter(), 0.0  # the last write

    def due(self) -> bool:
        """Whether an epoch's end (not a phase's: those always write) is worth a checkpoint."""
        return time.perf_counter() - self.saved_at >= CHECKPOINT_EVERY * self.save_seconds

    def save(self, trainer, pi: int, epoch: int, done_phase: bool, optimizer) -> None:
        """Everything a resumed run needs to go on from the end of this epoch; `optimizer` is
        (optimizer, scheduler) in a gradient phase, None in a cached one."""
        t0, t = time.perf_counter(), trainer
        model, best, start, tuned = shared_tensors(
            t.model.state_dict(), t.best_state, t.start and t.start[0], t.tuned and t.tuned[0])
        mid_phase = optimizer is not None and not done_phase
        self.writer.save_checkpoint({
            "phase": pi + 1 if done_phase else pi, "epoch": 0 if done_phase else epoch,
            "model": model, "best": best,
            "best_score": t.best_score, "best_loss": t.best_loss,
            "since_best": t.since_best, "best_at": t.best_at,
            "holdout": (None if t.holdout_logits is None
                        else torch.from_numpy(np.ascontiguousarray(t.holdout_logits))),
            "history": t.history, "stopped_early": t.stopped_early,
            "start": t.start and (start, t.start[1]),
            "tuned": t.tuned and (tuned, t.tuned[1]), "mix": t.mix,
            "optimizer": optimizer[0].state_dict() if mid_phase else None,
            "scheduler": optimizer[1].state_dict() if mid_phase else None,
            "scaler": t.scaler.state_dict() if mid_phase and t.scaler.is_enabled() else None,
        })
        self.saved_at = time.perf_counter()
        self.save_seconds = self.saved_at - t0


def restore(trainer, ckpt: dict) -> tuple[int, int]:
    """Put a checkpoint's state back into `trainer`; the (phase, epoch) to go on from. The
    optimizer's, scheduler's and loss scaler's states are taken back by the gradient phase
    that resumes (loop.py), from `ckpt`."""
    t = trainer
    t.resumed_from = (ckpt["phase"], ckpt["epoch"])
    t.model.load_state_dict(ckpt["model"])
    t.best_state, t.best_score = ckpt["best"], ckpt["best_score"]
    t.best_loss = ckpt.get("best_loss", math.inf)
    t.since_best, t.history = ckpt["since_best"], list(ckpt["history"])
    t.best_at = tuple(ckpt["best_at"]) if ckpt.get("best_at") else None
    if ckpt.get("holdout") is not None:  # the final head's validation logits before its refit
        t.holdout_logits = ckpt["holdout"].numpy()
    t.stopped_early = ckpt["stopped_early"]
    t.start, t.tuned = ckpt.get("start"), ckpt.get("tuned")
    # the checkpoint was read onto the CPU: the kept states go where the model is
    t.best_state, t.start, t.tuned = devices.to((t.best_state, t.start, t.tuned), t.device)
    t.mix = ckpt.get("mix")
    return ckpt["phase"], ckpt["epoch"]
