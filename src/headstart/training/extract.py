"""One streaming pass over a dataset: read, check, and (optionally) extract features, the way
the data's modality does it (modalities/: flip views and decoding threads for images, token
windows sorted by length for texts), reading and filling the feature cache.

Under torchrun the pass is collective: each process extracts its contiguous block of the
examples (each example once), the blocks are gathered so that every process holds the whole
result, and rank 0 alone writes the new features into the cache."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import modalities
from ..data.images import DEFAULT_MAX_PIXELS
from ..modalities import Extracted
from . import distributed as dist
from .features import FeatureCache, FeatureExtractor

__all__ = ["Extracted", "WriteOnly", "extract_features"]


def extract_features(ds, extractor: FeatureExtractor | None, pre, *, views: int = 1,
                     cache: FeatureCache | None = None, skip_bad: bool = False,
                     batch_size: int = 32, progress: bool = True,
                     max_pixels: int = DEFAULT_MAX_PIXELS, desc: str = "features") -> Extracted:
    """Features (n_kept, views, dim) of `extractor` on `ds` pre-processed by `pre`; without an
    extractor, only the check that every input reads (skipped ones listed under skip_bad)."""
    options = dict(views=views, skip_bad=skip_bad, batch_size=batch_size, max_pixels=max_pixels,
                   desc=desc)
    if not dist.active():
        return modalities.of(ds).extract(ds, extractor, pre, cache=cache, progress=progress,
                                         **options)
    return _sharded(ds, extractor, pre, cache=cache, progress=progress, **options)


@dataclass
class DeferredCache:
    """A feature cache that reads through and keeps its writes, for rank 0 to make."""
    cache: FeatureCache
    rows: list = field(default_factory=list)  # (key, [(hash, view, vector), ...])

    def get_many(self, key, hashes, view):
        return self.cache.get_many(key, hashes, view)

    def put_many(self, key, items) -> None:
        self.rows.append((key, list(items)))


@dataclass
class WriteOnly:
    """A feature cache that reads nothing and writes through: a pass that must run every input
    (one keeping what the features do not hold, such as frozen maps) still fills the cache."""
    cache: FeatureCache

    def get_many(self, key, hashes, view):
        return {}

    def put_many(self, key, items) -> None:
        self.cache.put_many(key, items)


def _sharded(ds, extractor, pre, *, cache, progress, **options) -> Extracted:
    if extractor is not None:
        extractor.session  # noqa: B018 - every process: one exports the ONNX graph, all load it
    mine = dist.block(len(ds))
    deferred = DeferredCache(cache) if cache is not None else None
    part = modalities.of(ds).extract(ds.subset(list(mine)), extractor, pre, cache=deferred,
                                     progress=progress and dist.is_main(), **options)
    with dist.guard():
        parts = dist.gather((mine.start, part, deferred.rows if deferred else []))
    if cache is not None and dist.is_main():
        for _, _, rows in parts:
            for key, items in rows:
                cache.put_many(key, items)
    return _joined(parts)


def _joined(parts) -> Extracted:
    """The processes' blocks as one Extracted, in the dataset's order; `per_rank` counts the
    examples each process ran through the backbone (not read from the cache)."""
    kept = [start + i for start, part, _ in parts for i in part.kept]
    feats = [part.features for _, part, _ in parts if part.features is not None and len(part.kept)]
    features = np.concatenate(feats) if feats else None
    if features is None and parts and parts[0][1].features is not None:
        features = parts[0][1].features[:0]
    return Extracted(features, kept, [s for _, part, _ in parts for s in part.skipped],
                     sum(part.from_cache for _, part, _ in parts),
                     per_rank=[len(part.kept) - part.from_cache if part.features is not None
                               else 0 for _, part, _ in parts],
                     hashes=None if any(part.hashes is None for _, part, _ in parts) else
                     [h for _, part, _ in parts for h in part.hashes])
