"""One streaming pass over a dataset: read, check, and (optionally) extract features, the way
the data's modality does it (modalities/: flip views and decoding threads for images, token
windows sorted by length for texts), reading and filling the feature cache."""
from __future__ import annotations

from .. import modalities
from ..data.images import DEFAULT_MAX_PIXELS
from ..modalities import Extracted
from .features import FeatureCache, FeatureExtractor

__all__ = ["Extracted", "extract_features"]


def extract_features(ds, extractor: FeatureExtractor | None, pre, *, views: int = 1,
                     cache: FeatureCache | None = None, skip_bad: bool = False,
                     batch_size: int = 32, progress: bool = True,
                     max_pixels: int = DEFAULT_MAX_PIXELS, desc: str = "features") -> Extracted:
    """Features (n_kept, views, dim) of `extractor` on `ds` pre-processed by `pre`; without an
    extractor, only the check that every input reads (skipped ones listed under skip_bad)."""
    return modalities.of(ds).extract(ds, extractor, pre, views=views, cache=cache,
                                     skip_bad=skip_bad, batch_size=batch_size, progress=progress,
                                     max_pixels=max_pixels, desc=desc)
