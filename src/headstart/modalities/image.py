"""Images: folders of class sub-folders, CSVs of path,label, in-memory arrays and PIL images.

Read safely and lazily by `data/` (images.py decodes, datasets.py lists, transforms.py resizes
and augments); features are streamed in one pass with horizontal-flip views, decoded in
threads and cached by content; input sizes and layer cuts are measured before training.
"""
from __future__ import annotations

import random
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import shipped
from ..data.datasets import PATH_COLUMNS, ImageDataset, load_images
from ..data.folders import inputs_under, is_folder
from ..data.images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, content_hash, decode_bytes,
                           is_image_path, is_regular_file, open_image, read_checked)
from ..data.texts import TABLE_EXTENSIONS
from ..data.transforms import Augment, Preprocess
from ..exceptions import DataError, ImageReadError
from .base import Extracted, Modality, prefetch_map
from .registry import register

# Adam(W) moves every weight by about the rate per step, whatever its gradient: 1e-3 is ~10% of
# a typical pre-trained conv weight per step, which wrecks the features the head was fitted on
# (measured on animal-mnist pool images: validation fell 7 points in the first epoch); 1e-4 at
# the top, 10x less at the stem, adapts without losing them.
DEFAULT_LR = {"linear_probe": 1e-3, "fine_tune": 1e-4, "top_tune": 1e-4, "gradual": 1e-4,
              "scratch": 3e-3, "contrastive": 1e-4}
LR_SPREAD = 10.0  # earliest group's rate = top rate / 10 (as fastai's slice(lo, hi))


class ImageModality(Modality):
    name, plural, article = "image", "images", "an"
    size_unit, size_name = "px", "image_size"
    default_backbone = "efficientnet_lite0"
    default_lr, lr_spread = DEFAULT_LR, LR_SPREAD
    # `auto` fine-tunes the top groups of images on the frozen groups' output computed once
    # (LP-FT, then the mix validation prefers; a mix of 0 is the probe). Measured on a dev split
    # of animal-mnist (20 and 100 per class, 3 seeds): as accurate as the probe or better, as
    # fine_tune was on the test split, in 20-95 s where fine_tune took 150-620 s
    auto_strategy = "top_tune"
    fallback = True  # data that does not say what it holds is read as images
    sizes_input = measures_input = flips = augments = True
    checked_on_loading = False  # a file is checked when it is decoded
    channels_last = drop_last = onnx_features = True
    zero_shot = "source_labels"  # map class names to the source classifier's labels
    quantization = "static"
    request = "file"

    # -- recognising and reading --------------------------------------------------------------
    def claims_member(self, path: Path) -> bool:
        return is_image_path(path)

    def table_claim(self, columns: list[str], cells: list[str]) -> int:
        # a `path` column (3), else image file names in the first column (2); texts' column
        # names outrank both (text.py)
        if any(c in PATH_COLUMNS for c in columns):
            return 3
        return 2 if any(is_image_path(Path(c)) for c in cells if c) else 0

    def load(self, data, labels=None, *, skip_bad: bool = False, options=None):
        return load_images(data, labels, skip_bad=skip_bad)

    def unlabelled(self, inputs: list, who) -> ImageDataset:
        return ImageDataset(list(inputs), ["?"] * len(inputs))

    def inputs_from_words(self, words, literal, cfg, run) -> tuple[list, list]:
        """Image paths; a text file given to an image model is named as the mismatch it is."""
        who = f"run {run} classifies images" if run else "the ImageNet backbone classifies images"
        if literal:
            raise DataError(f"--text: run {run} classifies images, not texts" if run else
                            "--text needs a text run: pass --run RUN (the ImageNet backbone "
                            "classifies images)")
        paths = []
        for a in words:
            if Path(a).suffix.lower() in TABLE_EXTENSIONS + (".txt",) and not is_image_path(
                    Path(a)) and is_regular_file(a):
                raise DataError(f"{a}: a text file, but {who}; pass image files (or --run a "
                                "text run)")
            if not is_folder(a):
                paths.append(a)
                continue
            paths += [str(p) for p in inputs_under(
                a, is_image_path, "image(s)", "a folder holding no image files (looked for "
                f"{', '.join(IMAGE_EXTENSIONS)}); pass image files or a folder of them")]
        return paths, paths

    def content_key(self, source) -> str:
        return content_hash(source)

    def write_example(self, source, folder: Path, n: int) -> None:
        if isinstance(source, (str, Path)) and Path(source).suffix.lower() in IMAGE_EXTENSIONS:
            shutil.copyfile(source, folder / f"{n:05d}{Path(source).suffix.lower()}")
        else:  # an in-memory image, or a file whose name does not say it is an image
            open_image(source).save(folder / f"{n:05d}.png")

    def shipped_holdout(self) -> tuple[list, list[str], str]:
        images, ys = shipped.load_animal_mnist()
        _, test = shipped.split_indices(ys, images)
        labels = [shipped.ANIMAL_CLASSES[y] for y in ys]
        return [images[i] for i in test], [labels[i] for i in test], "animal-mnist"

    # -- pre-processing, batches, features ----------------------------------------------------
    def preprocess(self, bcfg, size: int, *, truncate: bool = False) -> Preprocess:
        return Preprocess(int(size), bcfg.mean, bcfg.std)

    def augmenter(self, pre, *, flip: bool, crop_scale, jitter: float) -> Augment:
        return Augment(pre, flip=flip, scale=crop_scale, jitter=jitter)

    def train_batches(self, split, order, *, batch_size, pairs, pre, augment, seed, epoch,
                      per_pass, workers):
        data = EpochImages(split, augment, seed=seed, epoch=epoch, order=order,
                           per_pass=per_pass)
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers,
                                             drop_last=len(order) > batch_size)
        return loader, len(loader)

    def extract(self, ds, extractor, pre, *, views: int = 1, cache=None, skip_bad: bool = False,
                batch_size: int = 32, progress: bool = True, max_pixels: int | None = None,
                desc: str = "features") -> Extracted:
        return extract_images(ds, extractor, pre, views=views, cache=cache, skip_bad=skip_bad,
                              batch_size=batch_size, progress=progress,
                              max_pixels=max_pixels or DEFAULT_MAX_PIXELS, desc=desc)

    # -- what backbones ask -------------------------------------------------------------------
    def dummy_input(self, size: int, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, 3, size, size)

    def pool(self, hidden, batch, *, normalize: bool = True) -> torch.Tensor:
        return hidden.mean(dim=(2, 3))  # global average pool of a feature map

    def flops_unit(self, pre, sources: list, flops: float) -> tuple[float, str]:
        return flops, f"one {pre.size}px image"

    # -- export and serving -------------------------------------------------------------------
    def export_graph(self, model, bcfg, *, flip: bool) -> nn.Module:
        return ImageGraph(model, mean=bcfg.mean, std=bcfg.std, flip=flip)

    def export_dummy(self, pre) -> tuple:
        return (torch.randint(0, 256, (2, pre.size, pre.size, 3), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0)),)

    def onnx_inputs(self) -> tuple[list[str], dict, str]:
        return ["images"], {"images": {0: "batch"}}, "batch"

    def sidecar(self, pre, bcfg, *, size: int, flip: bool, stem: str) -> dict:
        return {"inputs": {"images": f"uint8 (batch, {size}, {size}, 3), RGB, NHWC"},
                "normalisation": {"mean": list(bcfg.mean), "std": list(bcfg.std),
                                  "where": "inside the graph: (pixel / 255 - mean) / std"},
                "resize": {"policy": f"resize the shorter side to {size} px (bicubic), then "
                                     f"crop the centre {size}x{size}",
                           "mode": "RGB (grey and palette images converted, alpha on white)"},
                "flip_averaging": flip}

    def runtime(self, meta: dict, folder: Path) -> "ImageInputs":
        return ImageInputs(meta)

    def describe_export(self, meta: dict, model_path: Path) -> tuple[str, str]:
        s = meta["input_size"]
        return (f"uint8 RGB images (N, {s}, {s}, 3), normalised inside the graph",
                "labels, input, normalisation, resize policy")


register(ImageModality())


class EpochImages(torch.utils.data.Dataset):
    """The images of one epoch in the given order; an image met again in a later pass over the
    data (the pair objective's small sets) gets a fresh random crop."""

    def __init__(self, split, transform, *, seed: int, epoch: int, order: list[int],
                 per_pass: int) -> None:
        self.split, self.transform, self.seed, self.epoch = split, transform, seed, epoch
        self.order, self.per_pass = order, max(1, per_pass)
        pre = getattr(transform, "pre", None)  # an Augment: decode for its size
        self.fit = pre.size if pre is not None else None

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, pos: int):
        i, k = self.order[pos], pos // self.per_pass
        img = open_image(self.split.ds.sources[i], fit=self.fit)
        # seeded by position: the same crops after a resume
        rng = random.Random(f"{self.seed}-{self.epoch}-{i}" + (f"-{k}" if k else ""))
        return torch.from_numpy(self.transform(img, rng)), int(self.split.y[i])


# -- one streaming pass: hash, decode, check, and (optionally) extract features ----------------
def _load(item, pre: Preprocess | None, views: int, max_pixels: int):
    i, source = item
    try:
        img = open_image(source, max_pixels=max_pixels, fit=pre.size if pre else None)
    except ImageReadError as e:
        return i, None, e
    if pre is None:
        return i, None, None
    return i, np.asarray(pre.resize(img)), None  # uint8 (S, S, 3): normalised into the batch


def _hashes(ds, max_pixels: int, skip_bad: bool, progress: bool, skipped: list, bad: set):
    """Content hashes (after a header check) of every image, for the cache."""
    hashes = [""] * len(ds)
    for i, s in enumerate(tqdm(ds.sources, desc="reading", disable=not progress, leave=False,
                               unit="img")):
        try:
            hashes[i] = read_checked(s, max_pixels)
        except ImageReadError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
            bad.add(i)
    return hashes


class _Rows:
    """Features of a pass, written row by row into one array allocated at the first vector (an
    image's (views, dim)): the pass holds the features once, not once per image and once
    stacked."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = np.zeros(n, bool)
        self.out: np.ndarray | None = None

    def __contains__(self, i: int) -> bool:
        return bool(self.done[i])

    def __len__(self) -> int:
        return int(self.done.sum())

    def put(self, i: int, vec: np.ndarray | None) -> None:
        if vec is not None:
            if self.out is None:
                self.out = np.empty((self.n, *np.shape(vec)), np.float32)
            self.out[i] = vec
        self.done[i] = True

    def kept(self) -> list[int]:
        return np.flatnonzero(self.done).tolist()

    def array(self, kept: list[int]) -> np.ndarray:
        return self.out if len(kept) == self.n else self.out[kept]


def extract_images(ds, extractor, pre: Preprocess | None, *, views: int = 1, cache=None,
                   skip_bad: bool = False, batch_size: int = 32, progress: bool = True,
                   max_pixels: int = DEFAULT_MAX_PIXELS, desc: str = "features") -> Extracted:
    """Images already in the feature cache are neither decoded nor run through the backbone
    again, so a second run on the same data costs only the file reads for hashing."""
    n = len(ds)
    skipped: list[str] = []
    bad: set[int] = set()
    hashes = _hashes(ds, max_pixels, skip_bad, progress, skipped, bad) if cache is not None \
        else [""] * n
    rows = _Rows(n)  # one preallocated array: no per-image arrays to stack at the end
    key = extractor.key(pre) if extractor is not None else ""
    if cache is not None and extractor is not None:
        per_view = [cache.get_many(key, hashes, v) for v in range(views)]
        for i, h in enumerate(hashes):
            if i not in bad and all(h in pv for pv in per_view):
                rows.put(i, np.stack([pv[h] for pv in per_view]))
    todo = [i for i in range(n) if i not in rows and i not in bad]
    from_cache = len(rows)
    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, unit="img")
    batch_idx: list[int] = []
    # one batch of inputs, reused: each image's views are normalised straight into its slot
    # (no per-image float arrays, no copy to join them; pre-processing is most of what a pass
    # costs beside the network)
    batch = np.empty((batch_size, views, 3, pre.size, pre.size), np.float32) \
        if extractor is not None and todo else None

    def flush() -> None:
        if not batch_idx:
            return
        m = len(batch_idx)
        feats = extractor(batch[:m].reshape(m * views, *batch.shape[2:])).reshape(m, views, -1)
        for j, i in enumerate(batch_idx):
            rows.put(i, feats[j])
        if cache is not None:
            cache.put_many(key, [(hashes[i], v, feats[j, v]) for j, i in enumerate(batch_idx)
                                 for v in range(views)])
        batch_idx.clear()

    use_pre = pre if extractor is not None else None
    items = ((i, ds.sources[i]) for i in todo)
    try:
        for i, arr in _readable(prefetch_map(lambda it: _load(it, use_pre, views, max_pixels),
                                             items), bar, skip_bad, skipped):
            if extractor is None:
                rows.put(i, None)
                continue
            pre.views_into(arr, batch[len(batch_idx)])
            batch_idx.append(i)
            if len(batch_idx) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    kept = rows.kept()
    features = rows.array(kept) if extractor is not None and kept else None
    return Extracted(features, kept, skipped, from_cache,
                     hashes=[hashes[i] if i not in bad else "" for i in range(n)]
                     if cache is not None else None)


# -- export --------------------------------------------------------------------------------------
class ImageGraph(nn.Module):
    """uint8 RGB images (N, S, S, 3) -> (logits, probabilities), both (N, classes): only what
    sits in front of the model in `headstart predict` (normalisation, the flip averaging the run
    was trained for) and a softmax behind it."""

    def __init__(self, model: nn.Module, *, mean, std, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.flip = flip

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        if self.flip:  # the mean of the logits of the image and its mirror, as predict does
            n = x.shape[0]
            both = self.model(torch.cat([x, x.flip(3)], dim=0))
            logits = (both[:n] + both[n:]) / 2
        else:
            logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


class ImageInputs:
    """Images for an exported graph, prepared exactly as the PyTorch path prepares them: decoded,
    RGB, the shorter side resized to S (bicubic), centre-cropped, as uint8 (S, S, 3)."""

    unit = "img"

    def __init__(self, meta: dict) -> None:
        norm = meta["normalisation"]
        self.pre = Preprocess(int(meta["input_size"]), tuple(norm["mean"]), tuple(norm["std"]))

    def read(self, source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return np.asarray(self.pre.resize(open_image(source, max_pixels=max_pixels,
                                                     fit=self.pre.size)),
                          dtype=np.uint8)

    def prepare(self, sources: list) -> list:
        """Many images as inputs."""
        return [self.read(s) for s in sources]

    def windowed(self, sources: list) -> int:
        """How many inputs are split into several windows: none, for images."""
        return 0

    def decode(self, data: bytes, name: str, *, max_pixels: int) -> np.ndarray:
        """An uploaded file's bytes as one input."""
        return np.asarray(self.pre.resize(decode_bytes(data, name, max_pixels=max_pixels,
                                                       fit=self.pre.size)),
                          dtype=np.uint8)

    def feed(self, items: list) -> dict:
        return {"images": np.stack(items)}

    def predict(self, run, sources: list, *, batch_size: int, skip_bad: bool, max_pixels: int,
                bar, classes: int):
        """(logits of the readable images, their indices, skipped "source: reason" lines),
        `run(items)` giving logits of a batch."""
        def load(item):
            i, s = item
            try:
                return i, self.read(s, max_pixels=max_pixels), None
            except ImageReadError as e:
                return i, None, e

        kept, skipped, arrays, chunks = [], [], [], []
        for i, arr in _readable(prefetch_map(load, enumerate(sources)), bar, skip_bad, skipped):
            kept.append(i)
            arrays.append(arr)
            if len(arrays) == batch_size:
                chunks.append(run(arrays))
                arrays = []
        if arrays:
            chunks.append(run(arrays))
        logits = np.concatenate(chunks) if chunks else np.zeros((0, classes), np.float32)
        return logits, kept, skipped


def _readable(results, bar, skip_bad: bool, skipped: list):
    """(index, array) of each decoded input of `results` ((index, array, error) triples), the
    bar moved once per input; an unreadable one is raised, or with `skip_bad` listed in
    `skipped` and left out. `results` is closed here however this ends (its prefetch stops at
    once, not whenever the garbage collector gets to it)."""
    with closing(results):
        for i, arr, err in results:
            bar.update(1)
            if err is None:
                yield i, arr
            elif skip_bad:
                skipped.append(str(err))
            else:
                raise err
