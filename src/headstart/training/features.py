"""Frozen-feature extraction (ONNX Runtime when it matches PyTorch, else eager) and the on-disk
feature cache, keyed by image content, backbone, weights and pre-processing."""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import sqlite3
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone, cache_dir
from ..data.transforms import Preprocess

log = logging.getLogger("headstart")


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=12)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """SQLite table of feature vectors: (extractor key, content hash, view) -> float32 vector.
    One file, atomic commits, safe to share between runs and heads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache_dir() / "features.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS features (key TEXT, hash TEXT, view INTEGER,"
                        " vec BLOB, PRIMARY KEY (key, hash, view))")

    def get_many(self, key: str, hashes: list[str], view: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        unique = sorted(set(hashes))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = self.db.execute(
                f"SELECT hash, vec FROM features WHERE key=? AND view=? AND hash IN "
                f"({','.join('?' * len(chunk))})", [key, view, *chunk])
            out.update({h: np.frombuffer(v, dtype=np.float32) for h, v in rows})
        return out

    def put_many(self, key: str, items: list[tuple[str, int, np.ndarray]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?)",
                            [(key, h, v, np.asarray(f, np.float32).tobytes()) for h, v, f in items])
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class FeatureExtractor:
    """Pooled features of a frozen backbone for batches of pre-processed images."""

    def __init__(self, backbone: Backbone, *, engine: str = "auto", threads: int | None = None,
                 onnx_dir: Path | None = None):
        self.backbone = backbone.eval()
        self.onnx_dir = onnx_dir  # where its ONNX graph goes (default: the cache's onnx/)
        self.size = backbone.image_size
        self.threads = threads or torch.get_num_threads()
        self.requested = engine
        self._session = None
        # ONNX Runtime is set up on first use only; text encoders run in PyTorch
        self._ready = engine == "torch" or backbone.config.modality == "text"

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the weights: needed for cache keys and ONNX files, not for eager inference
        (the trainer's per-epoch validation skips it)."""
        return weights_fingerprint(self.backbone)

    @property
    def session(self):
        if not self._ready:
            self._ready = True
            self._session = self._onnx_session(strict=self.requested == "onnxruntime")
        return self._session

    @property
    def engine(self) -> str:
        return "onnxruntime" if self.session is not None else "torch"

    def key(self, pre: Preprocess) -> str:
        layers = self.backbone.feature_layers
        return (f"{self.backbone.config.name}|{self.fingerprint}|{pre.signature()}"
                + (f"|layers{layers}" if layers > 1 else ""))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {"images": batch})[0]
        with torch.inference_mode():
            return self.backbone(torch.from_numpy(batch)).numpy()

    def _onnx_session(self, *, strict: bool):
        try:
            import onnxruntime as ort
        except ImportError:
            if strict:
                raise
            return None
        # a source model's name is its directory path: keep only its last part, file-safe
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.backbone.config.name).name)
        path = (self.onnx_dir or cache_dir() / "onnx") / f"{name}-{self.fingerprint}-{self.size}.onnx"
        try:
            if not path.is_file():
                export_onnx(self.backbone, path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.log_severity_level = 3
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            probe = np.random.default_rng(0).standard_normal((2, 3, self.size, self.size))
            probe = probe.astype(np.float32)
            with torch.inference_mode():
                ref = self.backbone(torch.from_numpy(probe)).numpy()
            got = session.run(None, {"images": probe})[0]
            if not np.allclose(got, ref, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(ref).max()))):
                raise RuntimeError(f"ONNX parity check failed (max diff {np.abs(got - ref).max()})")
            return session
        except Exception as e:  # noqa: BLE001 - fall back to eager PyTorch, and say so
            if strict:
                raise
            log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", path.name, e)
            return None


def export_onnx(backbone: Backbone, path: Path) -> None:
    """Export a backbone (images -> pooled features) to ONNX with a dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    dummy = torch.zeros(2, 3, backbone.image_size, backbone.image_size)
    was_training = backbone.training
    backbone.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(backbone, (dummy,), str(tmp), input_names=["images"],
                              output_names=["features"], opset_version=17, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
        tmp.replace(path)
    finally:
        backbone.train(was_training)
        tmp.unlink(missing_ok=True)


def prefetch_map(fn, items, *, workers: int = 2, ahead: int = 64):
    """Map fn over items in a thread pool, in order, keeping at most `ahead` results pending.
    Image decoding releases the GIL, so this overlaps I/O and decoding with inference."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()
