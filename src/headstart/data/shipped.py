"""Real labelled data that ships in pip packages, written out as image folders.

animal-mnist (MIT): 10,000 28x28 grey silhouettes of 10 animals, 1,000 per class. A fixed
stratified hold-out of 2,000 images (200 per class, seed 0) is the test set, never trained on.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ..exceptions import DataError

ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
                  "zebra")
TEST_PER_CLASS = 200


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the animal-mnist package is not installed; install it with "
                        "`pip install --no-deps animal-mnist==0.4`")
    root = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    with gzip.open(root / "animal_data_version_3.gz", "rb") as f:
        images = pickle.load(f)  # the package's own data file, shipped as a pickle
    with gzip.open(root / "animal_label_version_3.gz", "rb") as f:
        labels = pickle.load(f)
    return np.asarray(images, np.uint8), np.asarray(labels, np.int64)


def split_indices(labels: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test): the fixed hold-out is the same for every seed of the training sample."""
    rng = np.random.default_rng(0)
    pool, test = [], []
    for c in range(len(ANIMAL_CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test += idx[:TEST_PER_CLASS].tolist()
        pool += idx[TEST_PER_CLASS:].tolist()
    return np.array(sorted(pool)), np.array(sorted(test))


def write_animal_mnist(out: str | Path, *, per_class: int | None = None, seed: int = 0) -> Path:
    """Write out/train/<class>/*.png (per_class images each, or all 800) and out/test/<class>/
    (the 200-per-class hold-out). Existing complete folders are reused."""
    out = Path(out)
    marker = out / f".complete-{per_class or 'all'}-{seed}"
    if marker.is_file():
        return out
    images, labels = load_animal_mnist()
    pool, test = split_indices(labels)
    rng = np.random.default_rng(seed)
    train = []
    for c in range(len(ANIMAL_CLASSES)):
        idx = pool[labels[pool] == c]
        train += (rng.permutation(idx)[:per_class] if per_class else idx).tolist()
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not an animal-mnist folder written with these "
                        "settings; choose an empty folder")
    for split, idx in (("train", train), ("test", test)):
        for i in idx:
            d = out / split / ANIMAL_CLASSES[labels[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(d / f"{i:05d}.png")
    marker.touch()
    return out
