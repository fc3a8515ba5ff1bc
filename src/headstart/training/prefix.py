"""The frozen body's output, computed once: a phase that fine-tunes only the top layer groups
(`top_tune`) runs the frozen groups below them once per view of every example, keeps their
output maps in memory, and trains, validates, mixes and fits its final head on the top groups
alone. An epoch then costs the top groups' share of the network (about a sixth for
EfficientNet-Lite0's last two groups), with no decoding, resizing or frozen forward pass.

The views are those of the frozen features (the image, and its mirror image with --flip): each
epoch draws one of them per example, seeded, so a resumed epoch draws the same ones. There are
no random crops on this path (`--strategy fine_tune` draws them). Measured on a dev split of
animal-mnist (the rest of the training pool, never the test; 20 and 100 per class, seeds 0-2):
two random crops of each training image held beside the plain views gave the same dev accuracy
as the plain views alone (both equal to the probe's, or 0.2 points above it) at 1.3-1.8x the
time, and kept the probe where the plain views kept a mix of 0.75. Nor did mixup on the cached
maps (Beta(0.4, 0.4) pairs of maps and their labels, which gives the top groups the gradient a
probe head that already fits the training set leaves them): on the same dev splits at 100 per
class, seeds 0-2, the probe .9560 .9690 .9590, the plain views (the default) .9580 .9690 .9590,
mixup .9540 .9690 .9590; with the top 4 groups .9540 .9730 .9600 in 2-3x the time, and 10
epochs at 3e-4 .9560 .9780 .9590 in 2-5x (fine-tuning the whole network on the images, at about
10x: .9590 .9800 .9670).

The cache is used only where it holds: a single process (under torchrun the phase runs on the
images, as fine_tune does), a backbone that can split at the first tuned group, frozen groups
in inference mode, and maps that fit the memory budget."""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import devices, modalities
from ..backbones import Backbone
from . import distributed as dist
from .batches import Split
from .extract import extract_features
from .features import FeatureExtractor
from .predict import view_averaged

# the largest cache of frozen maps held in memory (bytes); above it the phase runs on the
# inputs (the frozen groups run forward every epoch) and says so
BUDGET = 1 << 30


class _Below(Backbone):
    """The frozen groups as a network of their own (inputs -> their output maps, flattened),
    so that FeatureExtractor runs them through ONNX Runtime (eager PyTorch, 3-10x slower on a
    CPU, is its fallback). Its name and weights' fingerprint are its own: its graph is cached
    beside the whole network's."""

    MARK = "~below-"

    def __init__(self, backbone: Backbone, below, first: str, rest=None) -> None:
        name = f"{backbone.config.name}{self.MARK}{first}"
        super().__init__(replace(backbone.config, name=name), backbone.input_size)
        self.body = backbone  # registered: its weights are this network's fingerprint
        self._below, self._rest = below, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._below(x).flatten(1)


class _WithMaps(_Below):
    """The whole network as its frozen groups, then the rest: its pooled features and the
    frozen groups' output maps (flattened) side by side, from one graph. A run's first pass
    over its inputs then gives the probe's features and a top_tune phase's frozen maps at once
    (the features are the whole network's own graph's numbers, bit for bit: checked on
    EfficientNet-Lite0), instead of a second pass through the frozen groups."""

    MARK = "+maps-"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._below(x)
        return torch.cat([self._rest(h), h.flatten(1)], dim=1)


class MapsOnTheWay:
    """Stands in for FeatureExtractor `own` in a pass (key, call): the features of a _WithMaps
    graph, cached under `own`'s key, while the maps of the batches it runs are written in
    order into one array per pass (`expect` before a pass, `take` after)."""

    def __init__(self, own: FeatureExtractor, model, first: str, below, rest,
                 shape: tuple[int, ...]) -> None:
        self.own, self.first, self.rest, self.shape = own, first, rest, shape
        self.graph = FeatureExtractor(_WithMaps(model.backbone, below, first, rest))
        self.dim = model.backbone.config.feature_dim
        self._buf: np.ndarray | None = None
        self._at = 0

    def key(self, pre) -> str:
        return self.own.key(pre)

    def expect(self, rows: int) -> None:
        """A pass of at most `rows` inputs (examples x views) follows."""
        self._buf, self._at = np.empty((rows, int(np.prod(self.shape))), np.float32), 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.graph(batch)
        if self._buf is not None and self._at + len(out) <= len(self._buf):
            self._buf[self._at:self._at + len(out)] = out[:, self.dim:]
        self._at += len(out)
        return out[:, :self.dim]

    def take(self, n: int, views: int) -> torch.Tensor | None:
        """The maps of the pass since `expect`, as (n, views, C*H*W) for the n examples it
        kept (in its order), or None where it ran fewer (some came from the feature cache)."""
        buf, at, self._buf = self._buf, self._at, None
        if buf is None or at != n * views:
            return None
        return torch.from_numpy(buf[:at].reshape(n, views, -1))


def maps_on_the_way(model, first: str | None, own: FeatureExtractor, *, examples: int,
                    views: int) -> MapsOnTheWay | None:
    """A stand-in for `own` that keeps the frozen maps below group `first` on the way (see
    MapsOnTheWay), where frozen_maps could hold them (see _holdable) and the model is on the
    CPU (ONNX Runtime); else None."""
    if first is None or devices.of(model).type != "cpu":
        return None
    held = _holdable(model, first, examples * views, int(model.backbone.input_size))
    return None if isinstance(held, str) else MapsOnTheWay(own, model, first, *held)


def _holdable(model, first: str, rows: int, size: int):
    """(below, rest, one map's shape) where the maps below group `first` of `rows` inputs at
    `size` can be held: one process, a backbone that splits there, within BUDGET; else why
    not (a phrase for the log)."""
    split = model.backbone.split_at(first)
    if split is None or dist.world() > 1:
        return ("under torchrun each process trains on its shard of the inputs" if split else
                f"{model.backbone.config.name} cannot be split at {first}")
    below, rest = split
    with _evaluating(model):
        dummy = modalities.of(model.backbone).dummy_input(size, 1)
        shape = tuple(below(devices.to(dummy, devices.of(model))).shape[1:])
    need = rows * int(np.prod(shape)) * 4
    if need > BUDGET:
        return (f"their frozen maps would take {need / 2**20:.0f} MB, over the "
                f"{BUDGET / 2**20:.0f} MB held in memory")
    return below, rest, shape


@dataclass
class FrozenMaps:
    """The frozen groups' output maps of the training and validation splits, and the rest of
    the network as a function of them."""

    rest: object  # maps -> pooled features (Backbone.split_at)
    shape: tuple[int, ...]  # one map's (channels, height, width)
    train: torch.Tensor  # (n, views, channels * height * width)
    val: torch.Tensor
    first: str | None = None  # the group the maps are the input of

    @property
    def nbytes(self) -> int:
        return (self.train.numel() + self.val.numel()) * self.train.element_size()

    def batches(self, order, y: np.ndarray, *, batch_size: int, seed: int, epoch: int,
                drop_last: bool):
        """((maps, targets) batches of one epoch in `order`, made as they are drawn; their
        number). One view per example, drawn by a generator seeded by (seed, epoch): the same
        draw after a resume."""
        rng = random.Random(f"{seed}-{epoch}-views")
        order = np.asarray(list(order), np.int64)
        views = torch.tensor([rng.randrange(self.train.shape[1]) for _ in order])
        n = len(order)
        stop = n - n % batch_size if drop_last and n > batch_size else n
        targets = torch.from_numpy(np.asarray(y, np.int64))

        def draw():
            for s in range(0, stop, batch_size):
                idx = torch.from_numpy(order[s:s + batch_size])
                yield (self.train[idx, views[s:s + batch_size]].view(len(idx), *self.shape),
                       targets[idx])
        return draw(), math.ceil(stop / batch_size)

    def logits(self, model, which: str = "val") -> np.ndarray:
        """The model's logits, averaged over the views, as predict_logits computes them."""
        with _evaluating(model):
            return view_averaged(model.head, self._features(model, which)).numpy()

    def features(self, model, which: str) -> np.ndarray:
        """Pooled features (n, views, dim) of the model's top groups on the cached maps."""
        with _evaluating(model):
            return self._features(model, which).numpy()

    def _features(self, model, which: str, batch_size: int = 256) -> torch.Tensor:
        maps = self.train if which == "train" else self.val
        flat = maps.flatten(0, 1)  # held on the CPU; each batch runs where the model is
        device = devices.of(model)
        out = [self.rest(devices.to(flat[s:s + batch_size].view(-1, *self.shape), device)).cpu()
               for s in range(0, len(flat), batch_size)]
        feats = torch.cat(out) if out else torch.zeros(0, model.backbone.feature_dim)
        return feats.view(maps.shape[0], maps.shape[1], -1)


@contextlib.contextmanager
def _evaluating(model):
    """The model in inference mode (BatchNorm statistics, no dropout), without gradients;
    its training mode, and so the BatchNorm policy, restored after."""
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was)


def frozen_maps(model, first: str, train: Split, val: Split, *, pre, views: int,
                batch_size: int, max_pixels: int, progress: bool, log,
                premade: FrozenMaps | None = None) -> FrozenMaps | None:
    """The frozen maps below group `first`, or None (said in the log) where the cache cannot
    be used and the phase must run on the inputs. `premade`: the maps the run's first pass
    kept on the way (MapsOnTheWay), used where they are of this group."""
    examples = len(train.y) + len(val.y)
    where = ", in the run's first pass over the inputs"
    if premade is None or premade.first != first:
        held = _holdable(model, first, examples * views, int(pre.size))
        if isinstance(held, str):
            log(f"top groups from {first}: trained on the inputs ({held})")
            return None
        below, rest, shape = held
        with _evaluating(model):
            extractor = FeatureExtractor(_Below(model.backbone, below, first))
            maps = [torch.from_numpy(np.ascontiguousarray(
                extract_features(s.ds, extractor, pre, views=views, batch_size=batch_size,
                                 progress=progress, max_pixels=max_pixels,
                                 desc=f"{name} frozen maps").features))
                for name, s in (("train", train), ("val", val)) if len(s.y)]
        if len(maps) == 1:
            maps.append(torch.zeros(0, views, maps[0].shape[2]))
        premade, where = FrozenMaps(rest, shape, *maps, first=first), ""
    log(f"top groups from {first}: the frozen groups ran once ({views} view(s) of {examples} "
        f"examples, {premade.nbytes / 2**20:.0f} MB of maps held){where}")
    return premade
