"""What one epoch is made of: the splits, the images of an epoch with their augmentation, the
shape of an epoch (batch size, passes, steps), the learning-rate schedule and the precision."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..data.datasets import LabelledData
from ..data.images import open_image


@dataclass
class Split:
    """Images or texts and integer targets of one split, plus cached frozen features when available."""
    ds: LabelledData
    y: np.ndarray
    features: np.ndarray | None = None  # (n, views, dim)


class ImageTorchDataset(torch.utils.data.Dataset):
    """The images of one epoch in the given order; an image met again in a later pass over the
    data (the pair objective's small sets) gets a fresh random crop."""

    def __init__(self, split: Split, transform, *, seed: int, epoch: int, order: list[int],
                 per_pass: int) -> None:
        self.split, self.transform, self.seed, self.epoch = split, transform, seed, epoch
        self.order, self.per_pass = order, max(1, per_pass)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, pos: int):
        i, k = self.order[pos], pos // self.per_pass
        img = open_image(self.split.ds.sources[i])
        # seeded by position: the same crops after a resume
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}" + (f"-{k}" if k else ""))
        return torch.from_numpy(self.transform(img, rng)), int(self.split.y[i])


# Random-resized-crop area when fine-tuning, and no colour jitter: the head was fitted on whole
# centre crops (LP-FT), and training views far from them make its first steps push the body
# away from the features it was fitted on. Measured on animal-mnist pool images (100 per
# class, a dev set from the pool, never the test): crops of (0.5, 1) with jitter 0.2 ended 1.6
# points below the probe; (0.8, 1) without jitter 1.8 points above it.
CROP_SCALE = (0.8, 1.0)
JITTER = 0.0
BF16_MIN_SIZE = 160  # measured: below this bf16 autocast gains nothing over channels_last fp32
PAIR_BATCH = 16  # examples per batch under the pair objective: 120 pairs per step
MIN_PAIR_STEPS = 16  # about this many optimizer steps per epoch under the pair objective
CLIP_NORM = 1.0  # global gradient-norm clip of every optimizer step


def use_bf16(precision: str, image_size: int) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32" or image_size < BF16_MIN_SIZE:
        return False
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def epoch_shape(objective: str, shard: int, batch_size: int, *, text: bool
            ) -> tuple[int, int, int]:
    """(batch size, passes over the shard, optimizer steps) of one epoch.

    Under the pair objective batches hold at most PAIR_BATCH examples, and a small
    training set is passed over ceil(MIN_PAIR_STEPS / steps of one pass) times per epoch,
    about MIN_PAIR_STEPS steps (passes run on without a break, so 30 examples in batches
    of 16 make 8 passes, 15 steps). SetFit likewise draws many pairs per example: 8
    labelled examples per class would otherwise give one or two steps an epoch."""
    bs, passes = batch_size, 1
    if objective == "pairs":
        bs = min(bs, PAIR_BATCH)
        passes = max(1, math.ceil(MIN_PAIR_STEPS / math.ceil(max(shard, 1) / bs)))
    n = shard * passes
    steps = math.ceil(n / bs) if text or n <= bs else n // bs
    return bs, passes, steps


def warmup_cosine(total: int, steps_per_epoch: int = 1, warmup_frac: float = 0.1):
    """Linear warm-up over max(10% of the steps, one epoch, capped at half the run), starting
    below the full rate even when an epoch is a single step, then cosine decay to zero. A
    pre-trained network's first full-rate Adam step is the one that does the damage."""
    warm = max(1, min(max(round(total * warmup_frac), steps_per_epoch), total // 2))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f
