"""`headstart export`: the run's whole classifier as one ONNX file, a JSON sidecar beside it,
and a parity check against the run's PyTorch model that refuses a graph which disagrees.

    RUN/model.onnx             images: uint8 (N, S, S, 3) RGB -> logits, probabilities
                               texts: input_ids, attention_mask, doc (token windows) -> same
    RUN/model.json             labels, input, normalisation, resize policy, windows, parity
    RUN/model.tokenizer/       texts: the tokenizer files

Everything is written into a hidden sibling folder first and moved into place only once the
parity check has passed, so a failed export leaves nothing behind.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..data.datasets import ImageDataset
from ..data.texts import TextDataset
from ..data.tokenize import TOKENIZER_FILES
from ..exceptions import ExportError
from ..training.predict import predict_logits
from .graph import (EXPORTER, OPSET, ImageGraph, TextGraph, eager_attention, image_dummy,
                    optimize_text, text_dummy, to_onnx)
from .runtime import ExportedModel, read_sidecar, run_export_path, sidecar_path, weights_digest
from .samples import Samples, parity_samples

TOLERANCE = 1e-3  # max |logit difference| to PyTorch (timm's threshold for its ONNX exports)
FORMATS = ("onnx", "onnx-int8")


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    meta: dict

    @property
    def parity(self) -> dict:
        return self.meta["parity"]


def default_path(trained, fmt: str = "onnx") -> Path:
    if trained.run_dir is None:
        raise ExportError("this model has no run directory; pass a path to export to "
                          "(TransferClassifier.export('model.onnx'))")
    path = run_export_path(trained.run_dir)
    return path.with_suffix(".int8.onnx") if fmt == "onnx-int8" else path


def export_run(trained, out: str | Path | None = None, *, fmt: str = "onnx",
               tolerance: float = TOLERANCE, samples: int = 32, test=None, max_drop: float = 0.02,
               heldout: int = 200, overwrite: bool = False,
               log: Callable[[str], None] = print) -> ExportResult:
    """Export a trained model (api.load(run) or a fitted classifier's) and check it."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out) if out is not None else default_path(trained, fmt)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: an export is written to a .onnx file; name it like "
                          f"{out.with_suffix('.onnx').name}")
    _check_target(out, overwrite)
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    was_training = trained.model.training
    trained.model.eval()
    try:
        if fmt == "onnx":
            meta = _build(trained, work / out.name, tolerance=tolerance, samples=samples, log=log)
        else:  # the checked fp32 graph first, then its 8-bit version beside it
            from .quantize import quantize_export
            (work / "fp32").mkdir()
            fp32 = work / "fp32" / out.name
            meta = _build(trained, fp32, tolerance=tolerance, samples=samples, log=log)
            meta = quantize_export(trained, fp32, work / out.name, meta, test=test,
                                   max_drop=max_drop, heldout=heldout, log=log)
            shutil.rmtree(work / "fp32")
        _write_sidecar(work / out.name, meta)
        _move_into_place(work, out)
    finally:
        trained.model.train(was_training)
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, sidecar_path(out), meta)


def _check_target(out: Path, overwrite: bool) -> None:
    """An earlier headstart export is replaced; anything else at the path is the user's."""
    if not out.exists() or overwrite:
        return
    try:
        ours = sidecar_path(out).is_file() and "headstart_version" in read_sidecar(out)
    except ExportError:
        ours = False
    if not ours:
        raise ExportError(f"{out} exists and is not a headstart export; choose another --out, "
                          "or pass --overwrite to replace it")


def _build(trained, path: Path, *, tolerance: float, samples: int, log) -> dict:
    cfg = trained.config
    size = int(cfg.image_size)
    meta = _describe(trained, path)
    if trained.modality == "text":
        pre = trained.preprocess
        graph = TextGraph(trained.model)
        body = "hello world " * pre.size  # one document of several windows, one short one
        dummy = text_dummy(pre.windows(["hello world", body])[:2], _pad_id(pre))
        tok_dir = path.parent / meta["text"]["tokenizer"]
        tok_dir.mkdir()
        for name in TOKENIZER_FILES:
            src = Path(pre.tokenizer_dir) / name
            if src.is_file():
                shutil.copy2(src, tok_dir / name)
    else:
        bcfg = trained.model.backbone.config
        graph = ImageGraph(trained.model, mean=bcfg.mean, std=bcfg.std, flip=bool(cfg.flip))
        dummy = image_dummy(size)
    try:
        with eager_attention(trained.model):
            to_onnx(graph, dummy, path, modality=trained.modality)
        if trained.modality == "text":
            meta["optimised"] = optimize_text(path, trained.model) or None
    except Exception as e:  # noqa: BLE001 - the exporter's many failure types, in one line
        raise ExportError(f"the ONNX exporter failed on this model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    meta["model_bytes"] = path.stat().st_size
    _write_sidecar(path, meta)  # the runtime reads it to prepare inputs
    exported = ExportedModel(path)
    meta["parity"] = check_parity(trained, exported, parity_samples(trained, limit=samples),
                                  tolerance=tolerance)
    p = meta["parity"]
    log(f"parity with PyTorch on {p['examples']} inputs ({p['inputs']}): max |logit "
        f"difference| {p['max_abs_logit_diff']:.2e} (tolerance {tolerance:.0e}), top-1 "
        f"agreement {p['top1_agree']}/{p['examples']}")
    if not p["max_abs_logit_diff"] <= tolerance:
        raise ExportError(f"parity check failed: the exported model's logits differ from "
                          f"PyTorch's by up to {p['max_abs_logit_diff']:.3g} on {p['inputs']}, "
                          f"above the tolerance {tolerance:g}; nothing was written. Report "
                          "this with the backbone's name, or pass --tolerance to accept it")
    return meta


def _pad_id(pre) -> int:
    return int(pre.tokenizer.pad_token_id or 0)


def _describe(trained, path: Path) -> dict:
    cfg, model = trained.config, trained.model
    bcfg = model.backbone.config
    size = int(cfg.image_size)
    temperature = getattr(model.head, "temperature", None)
    meta = {
        "format": "onnx", "headstart_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_file": path.name, "opset": OPSET, "exporter": EXPORTER,
        "modality": trained.modality, "labels": list(trained.classes),
        "backbone": cfg.backbone, "strategy": cfg.strategy, "input_size": size,
        "outputs": {"logits": "float32 (batch, classes), in the order of labels",
                    "probabilities": "softmax of logits"},
        "calibration": {"temperature": float(temperature) if temperature is not None else None,
                        "note": "inside the graph (the head's forward)"},
        "run": {"dir": str(trained.run_dir) if trained.run_dir else None,
                "weights": weights_digest(Path(trained.run_dir) / "model.safetensors")
                if trained.run_dir else None,
                "metrics": {k: trained.metrics.get(k) for k in ("val_accuracy", "strategy")
                            if k in (trained.metrics or {})}},
    }
    meta.update(_text_meta(trained.preprocess, path) if trained.modality == "text" else
                _image_meta(bcfg, size, bool(cfg.flip)))
    return meta


def _text_meta(pre, path: Path) -> dict:
    inputs = {"input_ids": f"int64 (windows, tokens), tokens <= {pre.size}",
              "attention_mask": "int64 (windows, tokens): 1 for tokens, 0 for padding",
              "doc": "int64 (windows,): the document (0..D-1, in order) of each window; "
                     "every document has at least one window"}
    text = {
        "tokenizer": f"{path.stem}.tokenizer", "window": pre.size, "truncate": pre.truncate,
        "windows": f"the text's tokens (no special tokens) cut into consecutive chunks of "
                   f"{pre.size - 2}, each wrapped as [CLS] chunk [SEP]"
                   + ("; only the first window is kept (--truncate)" if pre.truncate else ""),
        "layout": "one window per row, documents' windows in order; shorter windows padded "
                  f"with the pad token ({_pad_id(pre)}) and attention_mask 0",
        "pooling": "inside the graph: a document's embedding is the mean over every "
                   "unmasked token of all its windows, L2-normalised"}
    return {"inputs": inputs, "text": text}


def _image_meta(bcfg, size: int, flip: bool) -> dict:
    return {"inputs": {"images": f"uint8 (batch, {size}, {size}, 3), RGB, NHWC"},
            "normalisation": {"mean": list(bcfg.mean), "std": list(bcfg.std),
                              "where": "inside the graph: (pixel / 255 - mean) / std"},
            "resize": {"policy": f"resize the shorter side to {size} px (bicubic), then crop "
                                 f"the centre {size}x{size}",
                       "mode": "RGB (grey and palette images converted, alpha on white)"},
            "flip_averaging": flip}


def check_parity(trained, exported: ExportedModel, samples: Samples, *,
                 tolerance: float) -> dict:
    """Logits of the export and of the run's PyTorch model (eager, the `predict` path) on the
    same real inputs."""
    sources = samples.sources
    if trained.modality == "text":
        ds = TextDataset(list(sources), ["?"] * len(sources))
    else:
        ds = ImageDataset(list(sources), ["?"] * len(sources))
    ref, ex = predict_logits(trained.model, ds, trained.preprocess, flip=trained.config.flip,
                             engine="torch", progress=False, skip_bad=True, return_kept=True,
                             batch_size=16)
    got, kept, _ = exported.predict_logits([sources[i] for i in ex.kept], skip_bad=True,
                                           batch_size=16)
    if len(kept) != len(ex.kept) or not len(kept):
        raise ExportError(f"parity check: no readable inputs among {samples.description}")
    diff = float(np.abs(got - ref).max())
    multi = 0
    if trained.modality == "text":
        multi = sum(len(w) > 1 for w in exported.windows([sources[i] for i in ex.kept]))
    return {"max_abs_logit_diff": diff, "tolerance": tolerance, "examples": len(kept),
            "top1_agree": int((got.argmax(1) == ref.argmax(1)).sum()),
            "inputs": samples.description, "multi_window_texts": multi,
            "against": "the run's PyTorch model (eager), as `headstart predict` runs it",
            "torch_version": torch.__version__}


def _write_sidecar(path: Path, meta: dict) -> None:
    sidecar_path(path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _move_into_place(work: Path, out: Path) -> None:
    """Model and tokenizer first, the sidecar last: a sidecar marks a complete export."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(out)
    sidecar.unlink(missing_ok=True)
    for item in sorted(work.iterdir(), key=lambda p: p.suffix == ".json"):
        target = out.parent / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
