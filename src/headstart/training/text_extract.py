"""Embeddings of texts with a frozen text backbone, cached by text content.

Documents are sorted by length and grouped so a batch holds about `batch_size` windows of
similar length (little padding); long documents' windows are pooled inside the backbone."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.tokenize import TextPreprocess, doc_batches


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def embed_texts(backbone, pre: TextPreprocess, texts: list[str], *, batch_size: int = 32,
                progress: bool = False, desc: str = "embedding") -> np.ndarray:
    """(n, dim) float32 embeddings, in the order of `texts`."""
    out = np.zeros((len(texts), backbone.feature_dim), np.float32)
    if not texts:
        return out
    windows = pre.windows(texts)
    order = sorted(range(len(texts)), key=lambda i: -sum(len(w) for w in windows[i]))
    was_training = backbone.training
    backbone.eval()
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, unit="text")
    try:
        with torch.inference_mode():
            for idx in doc_batches(windows, order, batch_size):
                out[idx] = backbone(pre.collate([windows[i] for i in idx])).float().numpy()
                bar.update(len(idx))
    finally:
        bar.close()
        backbone.train(was_training)
    return out


def count_truncated(pre: TextPreprocess, texts: list[str]) -> int:
    """How many texts are longer than one window (and lose tokens under truncation)."""
    full = TextPreprocess(pre.tokenizer_dir, pre.size, truncate=False)
    return sum(len(w) > 1 for w in full.windows(texts))


def extract_text_features(ds, extractor, pre: TextPreprocess, *, cache=None,
                          batch_size: int = 32, progress: bool = True, desc: str = "embedding"):
    from .extract import Extracted

    texts = ds.sources
    hashes = [text_hash(t) for t in texts]
    key = extractor.key(pre) if cache is not None else ""
    cached = cache.get_many(key, hashes, 0) if cache is not None else {}
    todo = [i for i, h in enumerate(hashes) if h not in cached]
    feats = np.zeros((len(texts), 1, extractor.backbone.feature_dim), np.float32)
    for i, h in enumerate(hashes):
        if h in cached:
            feats[i, 0] = cached[h]
    if todo:
        new = embed_texts(extractor.backbone, pre, [texts[i] for i in todo],
                          batch_size=batch_size, progress=progress, desc=desc)
        feats[todo, 0] = new
        if cache is not None:
            cache.put_many(key, [(hashes[i], 0, new[j]) for j, i in enumerate(todo)])
    return Extracted(feats, list(range(len(texts))), [], len(texts) - len(todo))
