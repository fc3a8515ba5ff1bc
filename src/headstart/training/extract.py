"""One streaming pass over a dataset: hash, decode, check, and (optionally) extract features.

Images already in the feature cache are neither decoded nor run through the backbone again, so
a second run on the same data costs only the file reads for hashing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..data.datasets import ImageDataset
from ..data.images import DEFAULT_MAX_PIXELS, open_image, read_checked
from ..data.transforms import Preprocess
from ..exceptions import ImageReadError
from .features import FeatureCache, FeatureExtractor, prefetch_map


@dataclass
class Extracted:
    features: np.ndarray | None  # (n_kept, views, dim) float32, or None when only checking
    kept: list[int]  # indices into the dataset of images that could be read
    skipped: list[str]  # "file: reason" for each image skipped under skip_bad
    from_cache: int  # how many images came from the cache


def _load(item, pre: Preprocess | None, views: int, max_pixels: int):
    i, source = item
    try:
        img = open_image(source, max_pixels=max_pixels)
    except ImageReadError as e:
        return i, None, e
    if pre is None:
        return i, None, None
    return i, np.stack([pre(img, flip=v == 1) for v in range(views)]), None


def extract_features(ds: ImageDataset, extractor: FeatureExtractor | None, pre: Preprocess | None,
                     *, views: int = 1, cache: FeatureCache | None = None,
                     skip_bad: bool = False, batch_size: int = 32, progress: bool = True,
                     max_pixels: int = DEFAULT_MAX_PIXELS, desc: str = "features") -> Extracted:
    if getattr(pre, "modality", "image") == "text":
        from .text_extract import extract_text_features
        return extract_text_features(ds, extractor, pre, cache=cache, batch_size=batch_size,
                                     progress=progress, desc=desc)
    n = len(ds)
    skipped: list[str] = []
    bad: set[int] = set()
    hashes = [""] * n
    if cache is not None:
        for i, s in enumerate(tqdm(ds.sources, desc="reading", disable=not progress,
                                   leave=False, unit="img")):
            try:
                hashes[i] = read_checked(s, max_pixels)
            except ImageReadError as e:
                if not skip_bad:
                    raise
                skipped.append(str(e))
                bad.add(i)
    found: dict[int, np.ndarray] = {}
    key = extractor.key(pre) if extractor is not None else ""
    if cache is not None and extractor is not None:
        per_view = [cache.get_many(key, hashes, v) for v in range(views)]
        for i, h in enumerate(hashes):
            if i not in bad and all(h in pv for pv in per_view):
                found[i] = np.stack([pv[h] for pv in per_view])
    todo = [i for i in range(n) if i not in found and i not in bad]
    from_cache = len(found)
    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, unit="img")
    batch_idx: list[int] = []
    batch_arr: list[np.ndarray] = []

    def flush() -> None:
        if not batch_idx:
            return
        arr = np.concatenate(batch_arr).astype(np.float32, copy=False)
        feats = extractor(arr).reshape(len(batch_idx), views, -1)
        for j, i in enumerate(batch_idx):
            found[i] = feats[j]
        if cache is not None:
            cache.put_many(key, [(hashes[i], v, feats[j, v]) for j, i in enumerate(batch_idx)
                                 for v in range(views)])
        batch_idx.clear()
        batch_arr.clear()

    use_pre = pre if extractor is not None else None
    items = ((i, ds.sources[i]) for i in todo)
    try:
        for i, arr, err in prefetch_map(lambda it: _load(it, use_pre, views, max_pixels), items):
            bar.update(1)
            if err is not None:
                if not skip_bad:
                    raise err
                skipped.append(str(err))
                continue
            if extractor is None:
                found[i] = None
                continue
            batch_idx.append(i)
            batch_arr.append(arr)
            if len(batch_idx) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    kept = sorted(found)
    features = np.stack([found[i] for i in kept]) if extractor is not None and kept else None
    return Extracted(features, kept, skipped, from_cache)
