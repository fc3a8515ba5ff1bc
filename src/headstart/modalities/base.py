"""The Modality interface: everything about one kind of data that the rest of headstart asks
instead of branching on the kind's name.

A modality says how its data is recognised, read and validated (the readers themselves live
in `data/`), pre-processed, batched, augmented and pooled, how frozen features of it are
extracted (flip views for images, token windows for texts), which backbone and learning rates
are its defaults and what `--strategy auto` adapts with, what is measured before training, how
it is counted in reports, and how an exported model takes it (ONNX inputs, sidecar, ONNX
Runtime, `headstart serve`). `BackboneConfig.modality` and `LabelledData.modality` name one;
`modalities.get(name)` returns it.

To add a modality: one module in this package defining a subclass and registering it (see
image.py, text.py), imported by `modalities/__init__.py`, plus its backbones in `backbones/`.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

import numpy as np


@dataclass
class Extracted:
    """The result of one pass over a dataset (Modality.extract)."""
    features: np.ndarray | None  # (n_kept, views, dim) float32, or None when only checking
    kept: list[int]  # indices into the dataset of the inputs that could be read
    skipped: list[str]  # "source: reason" for each input skipped under skip_bad
    from_cache: int  # how many inputs' features came from the cache
    # under torchrun: how many inputs each process ran through the backbone (training/extract.py)
    per_rank: list[int] | None = None
    # content hashes of every input of the dataset, in order ("" for one not read), where the
    # pass computed them (data/duplicates.py)
    hashes: list[str] | None = None


class Modality:
    """One kind of data. Subclasses set the attributes and implement the methods."""

    # -- names --------------------------------------------------------------------------------
    name: str  # what BackboneConfig.modality and LabelledData.modality call it: "image"
    plural: str  # what a count of it is called: "images"
    article: str = "a"  # "an image backbone", "a text backbone"
    size_unit: str  # the unit of an input size (BackboneConfig.input_size): "px", "tok"
    size_name: str  # the input size's name in reports (compare's budget): "image_size"

    # -- defaults -----------------------------------------------------------------------------
    default_backbone: str  # the zoo's backbone for this data when none is named
    default_lr: Mapping[str, float]  # top learning rate of each strategy
    # gradient epochs of each strategy where --epochs is not given (others: builders.EPOCHS)
    default_epochs: Mapping[str, int] = MappingProxyType({})
    lr_spread: float  # discriminative rates: earliest group's rate = top rate / lr_spread
    auto_strategy: str  # what `--strategy auto` adapts with (after the probe, mixed with it)

    # -- what applies to it -------------------------------------------------------------------
    fallback: bool = False  # the modality of data that does not say what it holds
    sizes_input: bool = False  # the input size is chosen (--input-size); else the backbone's
    measures_input: bool = False  # input sizes and layer cuts are measured before training
    measures_layers: bool = False  # --layers auto measures how many top layers to pool
    flips: bool = False  # horizontal-flip views: augmentation, cached views, test-time mean
    augments: bool = False  # random crops while fine-tuning (--no-augment)
    checked_on_loading: bool = True  # inputs are checked as the data is read (else decoded)
    channels_last: bool = False  # batches are NCHW tensors that may run channels-last
    drop_last: bool = False  # an epoch drops its last partial batch (when it has more)
    onnx_features: bool = False  # frozen features may run through a throw-away ONNX graph
    zero_shot: str = "none"  # evaluation/zero_shot.py's method for this data
    quantization: str = "dynamic"  # export/quantize.py's method: "static" or "dynamic"
    request: str  # how `headstart serve` receives one: "file" (an upload) or "texts" (JSON)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<modality {self.name}>"

    # -- recognising and reading data ---------------------------------------------------------
    def claims_member(self, path: Path) -> bool:
        """Whether a file inside a class folder is an example of this modality."""
        raise NotImplementedError

    def claims_data_file(self, path: Path) -> bool:
        """Whether a file given as the whole dataset (other than a CSV/TSV) holds this data."""
        return False

    def table_claim(self, columns: list[str], cells: list[str]) -> int:
        """How strongly a CSV/TSV with this header (lower-case) and first cells holds this
        modality's data: 0 not at all; the highest claim of all modalities wins."""
        return 0

    def claims_items(self, items: list) -> bool:
        """Whether in-memory inputs (given with labels) are of this modality."""
        return False

    def load(self, data, labels=None, *, skip_bad: bool = False, options=None):
        """A LabelledData from a folder, a file, or inputs with labels (data/ reads them)."""
        raise NotImplementedError

    def unlabelled(self, inputs: list, who) -> object:
        """A dataset of inputs to predict (labels '?'), checked; `who` names the model."""
        raise NotImplementedError

    def inputs_from_words(self, words: list[str], literal: list[str], cfg, run) -> tuple:
        """(inputs, names shown) from the command line's INPUT words and --text values."""
        raise NotImplementedError

    def content_key(self, source) -> str:
        """A hash of one input's content: its key in the feature cache."""
        raise NotImplementedError

    def write_example(self, source, folder: Path, n: int) -> None:
        """Keep one example as a file `folder/NNNNN.<ext>` (a source model's sample)."""
        raise NotImplementedError

    def shipped_holdout(self) -> tuple[list, list[str], str]:
        """(inputs, labels, name) of the shipped hold-out of this modality's demo data."""
        raise NotImplementedError

    # -- pre-processing, batches, features ----------------------------------------------------
    def preprocess(self, bcfg, size: int, *, truncate: bool = False):
        """The backbone's input pipeline at `size` (its signature() keys the feature cache)."""
        raise NotImplementedError

    def describe_inputs(self, sources: list, bcfg, cfg, log: Callable[[str], None]) -> None:
        """Say, before training, what pre-processing for backbone `bcfg` under settings `cfg`
        will do to these inputs (never silently)."""

    def views(self, flip: bool) -> int:
        """Views of each input in cached features and test-time averaging."""
        return 2 if flip and self.flips else 1

    def augmenter(self, pre, *, flip: bool, crop_scale, jitter: float):
        """The training augmentation of fine-tuning, or None."""
        return None

    def train_batches(self, split, order: list[int], *, batch_size: int, pairs: bool, pre,
                      augment, seed: int, epoch: int, per_pass: int, workers: int):
        """((batch, targets) of one epoch in `order`, their number)."""
        raise NotImplementedError

    def step_pieces(self, x, t) -> list[tuple]:
        """One training batch as the pieces a gradient step runs one after another (the step's
        gradient is the whole batch's: training/steps.py). One piece: the batch itself."""
        return [(x, t)]

    def extract(self, ds, extractor, pre, *, views: int = 1, cache=None, skip_bad: bool = False,
                batch_size: int = 32, progress: bool = True, max_pixels: int | None = None,
                desc: str = "features") -> Extracted:
        """One pass over `ds`: features of `extractor` (a FeatureExtractor, or None to only
        check that every input reads), reading and filling `cache`."""
        raise NotImplementedError

    # -- what backbones ask -------------------------------------------------------------------
    def dummy_input(self, size: int, batch: int = 1):
        """A zero batch of full-size inputs (FLOP counting, tracing)."""
        raise NotImplementedError

    def probe_input(self, size: int):
        """A small batch of one input, enough to learn a network's feature sizes."""
        return self.dummy_input(size)

    def pool(self, hidden, batch, *, normalize: bool = True):
        """Pooled features (N, dim) of a layer's output for `batch` (a layer cut's tap)."""
        raise NotImplementedError

    def flops_unit(self, pre, sources: list, flops: float) -> tuple[float, str]:
        """(FLOPs per example, what an example costs) from the FLOPs of one full input."""
        return flops, f"one {self.name}"

    # -- export and serving -------------------------------------------------------------------
    def export_graph(self, model, bcfg, *, flip: bool):
        """The nn.Module that ONNX export traces: model inputs -> (logits, probabilities)."""
        raise NotImplementedError

    def export_dummy(self, pre) -> tuple:
        """Example inputs to trace the export graph on."""
        raise NotImplementedError

    def onnx_inputs(self) -> tuple[list[str], dict, str]:
        """(input names, their dynamic axes, the name of the output rows' axis)."""
        raise NotImplementedError

    def sidecar(self, pre, bcfg, *, size: int, flip: bool, stem: str) -> dict:
        """The export sidecar's description of the inputs (model.json)."""
        raise NotImplementedError

    def export_assets(self, pre, folder: Path, meta: dict) -> None:
        """Files an export needs beside the .onnx (a tokenizer), written into `folder`."""

    def parity_extras(self, pre) -> tuple[list, str]:
        """Inputs the export's parity check adds to the run's examples, and what they are."""
        return [], ""

    def runtime(self, meta: dict, folder: Path):
        """How ONNX Runtime takes inputs of this modality (export/runtime.py's ExportedModel
        calls it): an object with read/prepare, feed and predict (see image.py, text.py)."""
        raise NotImplementedError

    def describe_export(self, meta: dict, model_path: Path) -> tuple[str, str]:
        """(what the exported graph takes, what its sidecar says), for `headstart export`."""
        raise NotImplementedError


def prefetch_map(fn, items, *, workers: int = 2, ahead: int = 64):
    """Map fn over items in a thread pool, in order, keeping at most `ahead` results pending.
    Image decoding releases the GIL, so this overlaps I/O and decoding with inference.

    Closing the generator part-way (an error in the consumer, a `break`) cancels what has not
    started and never waits for the work in flight: a generator left part-way is closed by the
    garbage collector, in whichever thread it runs, even inside `threading`'s own bookkeeping
    while a thread starts, where joining a thread deadlocks (a test run once hung so)."""
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
