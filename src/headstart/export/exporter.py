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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..version import __version__
from ..exceptions import ExportError
from .runtime import (ExportedModel, read_sidecar, run_export_path, sidecar_path, weights_digest,
                      write_sidecar)

# The graph, the parity check and quantisation are imported where they run, deferred on
# purpose: they load torch and onnx, which FORMATS and TOLERANCE (read by `headstart export
# --help`) do not need.

TOLERANCE = 1e-3  # max |logit difference| to PyTorch (timm's threshold for its ONNX exports)


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
    return run_export_path(trained.run_dir).with_suffix(FORMATS[fmt].suffix)


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
        meta = FORMATS[fmt].write(trained, work / out.name, tolerance=tolerance,
                                  samples=samples, test=test, max_drop=max_drop,
                                  heldout=heldout, log=log)
        write_sidecar(work / out.name, meta)
        _move_into_place(work, out)
    finally:
        trained.model.train(was_training)
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, sidecar_path(out), meta)


def _fp32(trained, path: Path, *, tolerance, samples, log, **_) -> dict:
    """The whole classifier in float32, checked against PyTorch."""
    return _build(trained, path, tolerance=tolerance, samples=samples, log=log)


def _int8(trained, path: Path, *, tolerance, samples, test, max_drop, heldout, log) -> dict:
    """The checked fp32 graph first (in a folder of its own), then its 8-bit version."""
    from .quantize import quantize_export  # deferred on purpose (see the imports)

    (path.parent / "fp32").mkdir()
    fp32 = path.parent / "fp32" / path.name
    meta = _build(trained, fp32, tolerance=tolerance, samples=samples, log=log)
    meta = quantize_export(trained, fp32, path, meta, test=test, max_drop=max_drop,
                           heldout=heldout, log=log)
    shutil.rmtree(fp32.parent)
    return meta


@dataclass(frozen=True)
class Format:
    """An export format: the file suffix of its default path in a run, and its writer
    (trained model, path in the work folder, options -> sidecar)."""
    suffix: str
    write: Callable[..., dict]


FORMATS: dict[str, Format] = {"onnx": Format(".onnx", _fp32),
                              "onnx-int8": Format(".int8.onnx", _int8)}


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
    from .graph import eager_attention, optimize_transformer, to_onnx  # deferred on purpose
    from .parity import check_parity
    from .samples import parity_samples

    m, pre = trained.modality, trained.preprocess
    meta = _describe(trained, path)
    graph = m.export_graph(trained.model, trained.model.backbone.config,
                           flip=bool(trained.config.flip))
    m.export_assets(pre, path.parent, meta)
    try:
        with eager_attention(trained.model):
            to_onnx(graph, m.export_dummy(pre), path, inputs=m.onnx_inputs())
        fused = optimize_transformer(path, trained.model)
        if fused is not None:
            meta["optimised"] = fused or None
    except Exception as e:  # noqa: BLE001 - the exporter's many failure types, in one line
        raise ExportError(f"the ONNX exporter failed on this model ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    meta["model_bytes"] = path.stat().st_size
    write_sidecar(path, meta)  # the runtime reads it to prepare inputs
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


def _describe(trained, path: Path) -> dict:
    from .graph import EXPORTER, OPSET  # deferred on purpose (see the imports)

    cfg, model = trained.config, trained.model
    bcfg = model.backbone.config
    size = int(cfg.input_size)
    temperature = getattr(model.head, "temperature", None)
    meta = {
        "format": "onnx", "headstart_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_file": path.name, "opset": OPSET, "exporter": EXPORTER,
        "modality": trained.modality.name, "labels": list(trained.classes),
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
    meta.update(trained.modality.sidecar(trained.preprocess, bcfg, size=size, flip=bool(cfg.flip),
                                         stem=path.stem))
    return meta


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
