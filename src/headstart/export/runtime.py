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
from tqdm.auto import tqdm

from ..data.images import DEFAULT_MAX_PIXELS
from ..exceptions import ExportError
from .. import threads as thread_policy  # the name `threads` is an argument here

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


def write_sidecar(model_path: str | os.PathLike, meta: dict) -> None:
    sidecar_path(model_path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


class ExportedModel:
    """An exported classifier (`.onnx` + its `.json` sidecar), loaded once. ONNX Runtime
    sessions may be run from several threads at once."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        import onnxruntime as ort  # deferred on purpose: only runs with an export load it

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # the process's thread policy (threads.py): no spinning (it cost 10-20% of MiniLM's
        # speed on 2 shared cores, measured), as many threads as there are free cores
        thread_policy.session_options(opts, threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(f"{self.path}: ONNX Runtime cannot load it ({e}); export the run "
                              "again with `headstart export RUN`") from None
        self.classes: list[str] = [str(c) for c in self.meta["labels"]]
        from .. import modalities  # deferred on purpose: torch, which the sidecar helpers here
        # (read by `export --help` and `serve`'s start) do not need

        self.modality = modalities.get(self.meta["modality"])
        self.input_size = int(self.meta["input_size"])
        # how inputs are prepared for the graph: read, resized or tokenised, fed, batched
        self.inputs = self.modality.runtime(self.meta, self.path.parent)

    def run(self, items: list, *, output: str = "logits") -> np.ndarray:
        """Logits (or probabilities) (N, classes) of a batch of prepared inputs (images at the
        model's input size, or documents' token windows: self.inputs.prepare)."""
        return self.session.run([output], self.inputs.feed(items))[0]

    def predict_logits(self, sources: list, *, batch_size: int = 32, skip_bad: bool = False,
                       max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False):
        """(logits (n_kept, classes), kept indices, skipped "source: reason" lines)."""
        bar = tqdm(total=len(sources), desc="predicting (onnxruntime)", disable=not progress,
                   unit=self.inputs.unit)
        try:
            return self.inputs.predict(self.run, sources, batch_size=batch_size,
                                       skip_bad=skip_bad, max_pixels=max_pixels, bar=bar,
                                       classes=len(self.classes))
        finally:
            bar.close()


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
