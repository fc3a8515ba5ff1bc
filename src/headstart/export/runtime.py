"""Running an exported classifier with ONNX Runtime: what `predict --run`, `evaluate` and
`serve` use when the run has an export. PyTorch is not called here; inputs are prepared
exactly as headstart's PyTorch path prepares them (same resize, same token windows)."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS, decode_bytes, open_image
from ..data.tokenize import TextPreprocess, doc_batches
from ..data.transforms import Preprocess
from ..exceptions import ExportError, ImageReadError

log = logging.getLogger("headstart")
MODEL_FILE = "model.onnx"  # a run's own export: RUN/model.onnx, its sidecar RUN/model.json


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def weights_digest(path: str | os.PathLike) -> str:
    """blake2b of a run's model.safetensors: ties an export to the weights it came from."""
    p = Path(path)
    st = p.stat()
    return _digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(model_path: str | os.PathLike) -> dict:
    path = sidecar_path(model_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: cannot read the export's sidecar ({e}); export the run again "
                          "with `headstart export RUN`") from None
    if not isinstance(meta, dict) or "labels" not in meta or "modality" not in meta:
        raise ExportError(f"{path}: not a headstart export sidecar (no labels or modality); "
                          "export the run again with `headstart export RUN`")
    return meta


def flat_windows(docs: list[list[list[int]]], pad_id: int) -> tuple[np.ndarray, ...]:
    """(input_ids, attention_mask, doc) for the text graph: every window of every document, in
    order, one per row, padded with `pad_id` (mask 0) to the longest; doc[i] is the document
    of row i. As TextPreprocess.collate lays them out for the PyTorch backbone."""
    flat = [(d, w) for d, ws in enumerate(docs) for w in ws]
    length = max(len(w) for _, w in flat)
    ids = np.full((len(flat), length), pad_id, np.int64)
    mask = np.zeros((len(flat), length), np.int64)
    for j, (_, w) in enumerate(flat):
        ids[j, :len(w)] = w
        mask[j, :len(w)] = 1
    return ids, mask, np.array([d for d, _ in flat], np.int64)


class ExportedModel:
    """An exported classifier (`.onnx` + its `.json` sidecar), loaded once. ONNX Runtime
    sessions may be run from several threads at once."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # idle threads sleep instead of spinning, as headstart's OMP_WAIT_POLICY=PASSIVE does
        # for torch: spinning cost 10-20% of MiniLM's speed on 2 shared cores (measured)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{self.path}: ONNX Runtime cannot load it ({e}); export the run "
                              "again with `headstart export RUN`") from None
        self.classes: list[str] = [str(c) for c in self.meta["labels"]]
        self.modality: str = self.meta["modality"]
        self.input_size = int(self.meta["input_size"])
        if self.modality == "text":
            text = self.meta["text"]
            self.text_pre = TextPreprocess(str(self.path.parent / text["tokenizer"]),
                                           int(text["window"]), truncate=bool(text["truncate"]))
        else:
            norm = self.meta["normalisation"]
            self.image_pre = Preprocess(self.input_size, tuple(norm["mean"]), tuple(norm["std"]))

    # -- one batch ---------------------------------------------------------------------------
    def run_images(self, batch: np.ndarray, *, output: str = "logits") -> np.ndarray:
        """Logits (or probabilities) (N, classes) of uint8 images (N, S, S, 3) at the model's
        input size."""
        return self.session.run([output], {"images": batch})[0]

    def run_windows(self, docs: list[list[list[int]]], *, output: str = "logits") -> np.ndarray:
        """Logits (or probabilities) (D, classes) of documents given as their token windows."""
        ids, mask, doc = flat_windows(docs, self.pad_id)
        return self.session.run([output], {"input_ids": ids, "attention_mask": mask,
                                           "doc": doc})[0]

    @functools.cached_property
    def pad_id(self) -> int:
        return int(self.text_pre.tokenizer.pad_token_id or 0)

    # -- inputs, prepared as the PyTorch path prepares them ----------------------------------
    def image_array(self, source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """(S, S, 3) uint8: decoded, RGB, shorter side resized to S (bicubic), centre-cropped."""
        return np.asarray(self.image_pre.resize(open_image(source, max_pixels=max_pixels)),
                          dtype=np.uint8)

    def decode_upload(self, data: bytes, name: str, *, max_pixels: int) -> np.ndarray:
        img = decode_bytes(data, name, max_pixels=max_pixels)
        return np.asarray(self.image_pre.resize(img), dtype=np.uint8)

    def windows(self, texts: list[str]) -> list[list[list[int]]]:
        return self.text_pre.windows(texts)

    # -- many inputs --------------------------------------------------------------------------
    def predict_logits(self, sources: list, *, batch_size: int = 32, skip_bad: bool = False,
                       max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False):
        """(logits (n_kept, classes), kept indices, skipped "source: reason" lines)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="predicting (onnxruntime)", disable=not progress,
                   unit="text" if self.modality == "text" else "img")
        try:
            if self.modality == "text":
                return self._text_logits(sources, batch_size, bar), list(range(len(sources))), []
            return self._image_logits(sources, batch_size, skip_bad, max_pixels, bar)
        finally:
            bar.close()

    def _text_logits(self, texts: list[str], batch_size: int, bar) -> np.ndarray:
        out = np.zeros((len(texts), len(self.classes)), np.float32)
        if not texts:
            return out
        windows = self.windows(texts)
        # like embed_texts: documents sorted by length, about batch_size windows per batch
        order = sorted(range(len(texts)), key=lambda i: -sum(len(w) for w in windows[i]))
        for idx in doc_batches(windows, order, batch_size):
            out[idx] = self.run_windows([windows[i] for i in idx])
            bar.update(len(idx))
        return out

    def _image_logits(self, sources, batch_size, skip_bad, max_pixels, bar):
        from ..training.features import prefetch_map

        def load(item):
            i, s = item
            try:
                return i, self.image_array(s, max_pixels=max_pixels), None
            except ImageReadError as e:
                return i, None, e

        kept, skipped, arrays, chunks = [], [], [], []
        for i, arr, err in prefetch_map(load, enumerate(sources)):
            bar.update(1)
            if err is not None:
                if not skip_bad:
                    raise err
                skipped.append(str(err))
                continue
            kept.append(i)
            arrays.append(arr)
            if len(arrays) == batch_size:
                chunks.append(self.run_images(np.stack(arrays)))
                arrays = []
        if arrays:
            chunks.append(self.run_images(np.stack(arrays)))
        logits = np.concatenate(chunks) if chunks else np.zeros((0, len(self.classes)), np.float32)
        return logits, kept, skipped


def run_export_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / MODEL_FILE


def exported_for(run_dir: str | os.PathLike | None) -> ExportedModel | None:
    """The run's own ONNX export (RUN/model.onnx) when there is one made from the run's
    current weights; None otherwise (then headstart runs the model in PyTorch)."""
    if run_dir is None:
        return None
    path = run_export_path(run_dir)
    if not path.is_file() or not sidecar_path(path).is_file():
        return None
    meta = read_sidecar(path)
    weights = Path(run_dir) / "model.safetensors"
    if meta.get("run", {}).get("weights") != weights_digest(weights):
        log.warning("%s was exported from other weights than %s holds now; using PyTorch "
                    "(run `headstart export %s` again)", path, weights, run_dir)
        return None
    st = path.stat()
    return _load(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> ExportedModel:
    return ExportedModel(path)


def onnx_logits(trained, sources: list, *, skip_bad: bool = False, progress: bool = False):
    """(logits, kept, skipped) from the run's current ONNX export, or None without one (the
    caller then runs PyTorch). `trained` is api.load's TrainedModel."""
    exported = exported_for(getattr(trained, "run_dir", None))
    if exported is None:
        return None
    return exported.predict_logits(sources, skip_bad=skip_bad, progress=progress,
                                   max_pixels=trained.config.max_pixels)
