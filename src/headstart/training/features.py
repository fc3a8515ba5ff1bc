"""Frozen-feature extraction (ONNX Runtime when it matches PyTorch, else eager) and the on-disk
feature cache, keyed by image content, backbone, weights and pre-processing."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import devices, modalities
from .. import threads as thread_policy
from ..backbones import Backbone
from ..cache import cache_dir
from ..exceptions import ConfigError
from ..safeio import atomic_write
from . import distributed as dist

log = logging.getLogger("headstart")


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=12)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """SQLite table of feature vectors: (extractor key, content hash, view) -> float32 vector.
    One file, atomic commits, safe to share between runs and heads (and processes).

    A damaged database is never a crash: it is reported, moved out of the way and rebuilt
    empty (features are computed again); where even that fails, the cache is bypassed (held
    in memory for this process only)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache_dir() / "features.sqlite"
        self.db = None
        self._connect()

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._open(str(self.path))
        except sqlite3.DatabaseError as e:
            self._rebuild(e) if _damaged(e) else self._bypass(e)
        except OSError as e:
            self._bypass(e)

    TIMEOUT = 60  # seconds to wait for another process's write to finish

    def _open(self, where: str):
        db = sqlite3.connect(where, timeout=self.TIMEOUT)
        db.execute("CREATE TABLE IF NOT EXISTS features (key TEXT, hash TEXT, view INTEGER,"
                   " vec BLOB, PRIMARY KEY (key, hash, view))")
        return db

    def _rebuild(self, error: Exception) -> None:
        """Move the damaged file aside (kept for inspection) and start an empty cache."""
        with contextlib.suppress(Exception):
            self.db.close()
        aside = self.path.with_name(self.path.name + ".damaged")
        try:
            os.replace(self.path, aside)
            for extra in ("-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.path) + extra)
            self.db = self._open(str(self.path))
            log.warning("the feature cache %s was damaged (%s); moved it to %s and started an "
                        "empty one (features are computed again)", self.path, error, aside.name)
        except (OSError, sqlite3.Error) as e:
            self._bypass(e)

    def _bypass(self, error: Exception) -> None:
        log.warning("the feature cache %s cannot be used (%s); features are kept in memory "
                    "for this run only", self.path, error)
        self.db = self._open(":memory:")

    def _run(self, fn, default):
        """fn(db) with damage handled: rebuilt once, and `default` when it fails again."""
        for attempt in range(2):
            try:
                return fn(self.db)
            except sqlite3.DatabaseError as e:
                if attempt or not _damaged(e):  # busy, read-only, disk full: not damage
                    self._bypass(e)
                    return default
                self._rebuild(e)
        return default

    def get_many(self, key: str, hashes: list[str], view: int) -> dict[str, np.ndarray]:
        def get(db) -> dict[str, np.ndarray]:
            out: dict[str, bytes] = {}
            unique = sorted(set(hashes))
            for i in range(0, len(unique), 500):
                chunk = unique[i:i + 500]
                rows = db.execute(
                    f"SELECT hash, vec FROM features WHERE key=? AND view=? AND hash IN "
                    f"({','.join('?' * len(chunk))})", [key, view, *chunk])
                out.update({h: v for h, v in rows})
            return _vectors(out)
        return self._run(get, {})

    def put_many(self, key: str, items: list[tuple[str, int, np.ndarray]]) -> None:
        rows = [(key, h, v, np.asarray(f, np.float32).tobytes()) for h, v, f in items]

        def put(db) -> None:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?)", rows)
            db.commit()
        self._run(put, None)

    def close(self) -> None:
        self.db.close()


def _damaged(e: sqlite3.DatabaseError) -> bool:
    """Damage (a file that is not a database, or a corrupt one), not a passing state such as
    a lock held by another process."""
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or type(e) is sqlite3.DatabaseError


def _vectors(blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    """float32 vectors of the blobs; a damaged row (not whole floats, or not of the length the
    others share) is left out, to be computed again."""
    ok = {h: v for h, v in blobs.items() if isinstance(v, bytes) and v and len(v) % 4 == 0}
    if not ok:
        return {}
    lengths = [len(v) for v in ok.values()]
    common = max(set(lengths), key=lengths.count)
    return {h: np.frombuffer(v, dtype=np.float32) for h, v in ok.items() if len(v) == common}


class FeatureExtractor:
    """Pooled features of a frozen backbone for batches of pre-processed inputs; where the
    modality allows (images), through a throw-away ONNX graph checked against PyTorch."""

    def __init__(self, backbone: Backbone, *, engine: str = "auto", threads: int | None = None,
                 onnx_dir: Path | None = None):
        self.backbone = backbone.eval()
        self.onnx_dir = onnx_dir  # where its ONNX graph goes (default: the cache's onnx/)
        self.size = backbone.input_size
        self.threads = threads or torch.get_num_threads()
        self.requested = engine
        self._session = None
        self.device = devices.of(backbone)
        # ONNX Runtime (CPU) is set up on first use only, for the modalities that allow it; a
        # backbone on a GPU runs there in PyTorch
        self.modality = modalities.of(backbone)
        if engine == "onnxruntime" and self.device.type != "cpu":
            raise ConfigError(f"ONNX Runtime features run on the CPU; {backbone.config.name} is "
                              f"on {self.device}: use engine auto or torch")
        self._ready = (engine == "torch" or not self.modality.onnx_features
                       or self.device.type != "cpu")

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

    def key(self, pre) -> str:
        layers = self.backbone.feature_layers
        # features computed on a GPU (TF32 convolutions, other kernels) are kept apart
        return (f"{self.backbone.config.name}|{self.fingerprint}|{pre.signature()}"
                + (f"|layers{layers}" if layers > 1 else "")
                + ("" if self.device.type == "cpu" else f"|{self.device.type}"))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {self.modality.onnx_inputs()[0][0]: batch})[0]
        with torch.inference_mode():
            x = devices.to(torch.from_numpy(batch), self.device)
            return self.backbone(x).float().cpu().numpy()

    def _onnx_session(self, *, strict: bool):
        try:
            import onnxruntime as ort  # deferred on purpose: only when features run through it
        except ImportError:
            if strict:
                raise
            return None
        # a source model's name is its directory path: keep only its last part, file-safe
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.backbone.config.name).name)
        path = (self.onnx_dir or cache_dir() / "onnx") / f"{name}-{self.fingerprint}-{self.size}.onnx"
        try:
            _exported(self.backbone, path)
            opts = ort.SessionOptions()
            thread_policy.session_options(opts, self.threads)  # the policy: no spinning
            opts.log_severity_level = 3
            try:
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception:  # noqa: BLE001 - a damaged cached file: export it again, once
                if dist.active():  # the others may be reading it: PyTorch for this process
                    raise
                export_onnx(self.backbone, path)
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            shape = tuple(self.modality.dummy_input(self.size, 2).shape)
            probe = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            with torch.inference_mode():
                ref = self.backbone(torch.from_numpy(probe)).numpy()
            got = session.run(None, {self.modality.onnx_inputs()[0][0]: probe})[0]
            if not np.allclose(got, ref, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(ref).max()))):
                raise RuntimeError(f"ONNX parity check failed (max diff {np.abs(got - ref).max()})")
            return session
        except Exception as e:  # noqa: BLE001 - fall back to eager PyTorch, and say so
            if strict:
                raise
            log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", path.name, e)
            return None


def _exported(backbone: Backbone, path: Path) -> None:
    """The backbone's graph at `path`, exported if missing. Under torchrun one process per
    machine (local rank 0) exports while the others wait at a barrier, then all load it."""
    if not dist.active():
        if not path.is_file():
            export_onnx(backbone, path)
        return
    error = None
    if dist.local_rank() == 0 and not path.is_file():
        try:
            export_onnx(backbone, path)
        except Exception as e:  # noqa: BLE001 - raised after the barrier, which all must reach
            error = e
    dist.barrier()
    if error is not None:
        raise error
    if not path.is_file():
        raise RuntimeError(f"{path.name} was not exported by this machine's first process")


def export_onnx(backbone: Backbone, path: Path) -> None:
    """Export a backbone (inputs -> pooled features) to ONNX with a dynamic batch axis, under a
    unique temporary name renamed into place: processes exporting the same file at once (the
    ranks of a torchrun job on a fresh cache) each rename a complete file."""
    m = modalities.of(backbone)
    dummy = m.dummy_input(backbone.input_size, 2)
    (name, *_), axes, rows = m.onnx_inputs()
    was_training = backbone.training
    backbone.eval()
    try:
        with atomic_write(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(backbone, (dummy,), str(tmp), input_names=[name],
                              output_names=["features"], opset_version=17, dynamo=False,
                              dynamic_axes={**axes, "features": {0: rows}})
    finally:
        backbone.train(was_training)
