"""`--format onnx-int8`: an 8-bit ONNX model for phones and small devices (ONNX Runtime Mobile
runs it), with its accuracy drop, size and speed measured against the fp32 export.

Images: static quantisation of the convolutions (int8 weights per channel, uint8 activations
whose ranges are calibrated on the run's training examples), because dynamic quantisation of
convolutions runs them as ConvInteger, measured about 7x slower than fp32 here. Texts: dynamic quantisation
(int8 weights, activations quantised at run time), the usual recipe for BERT-style encoders.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..exceptions import ExportError, ImageReadError
from .parity import check_parity
from .runtime import ExportedModel, write_sidecar
from .samples import Samples, heldout_samples, parity_samples, run_examples, shipped_examples

CALIBRATION = 64  # images
# the backbone's convolutions, activations and residual sums; the head and the steps around
# the model stay float. Measured on a 64 px EfficientNet-Lite0 probe (80 test images, fp32
# 0.600): everything quantised 0.100; convolutions only 0.600 but no faster (3.7 vs 3.8 ms);
# convolutions + Clip + Add in the backbone 0.638, top-1 agreement 0.91, 1.7 ms.
STATIC_OPS = ["Conv", "Clip", "Relu", "Add", "MatMul"]


def quantize_export(trained, fp32: Path, out: Path, meta: dict, *, test=None,
                    max_drop: float = 0.02, heldout: int = 200, log=print) -> dict:
    """Quantise the checked fp32 export `fp32` into `out`; return the sidecar for `out`."""
    prepared = fp32.parent / "prepared.onnx"
    fp = ExportedModel(fp32)
    try:
        method = _quantize(trained, fp, fp32, prepared, out, meta)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantiser's own failures, in one line
        raise ExportError(f"int8 quantisation failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); the fp32 export "
                          "(--format onnx) is unaffected") from e
    prepared.unlink(missing_ok=True)
    meta = {**meta, "format": "onnx-int8", "model_file": out.name,
            "model_bytes": out.stat().st_size, "fp32_parity": meta["parity"]}
    write_sidecar(out, meta)
    q = ExportedModel(out)
    parity = check_parity(trained, q, parity_samples(trained, limit=32), tolerance=None)
    parity["note"] = "int8: no logit tolerance; judged by its accuracy drop"
    report = {"method": method, "fp32_bytes": fp32.stat().st_size,
              "int8_bytes": out.stat().st_size, **_speed(fp, q, trained),
              **_accuracy(fp, q, heldout_samples(trained, test, limit=heldout))}
    meta.update(parity=parity, quantization=report)
    _log(report, parity, log)
    _gate(report, max_drop)
    return meta


def _quantize(trained, fp: ExportedModel, fp32: Path, prepared: Path, out: Path,
              meta: dict) -> str:
    # deferred on purpose: onnx and the quantisation tools are only needed for onnx-int8
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    m = trained.modality
    if m.quantization == "dynamic":
        with _quiet():  # fused attention ops (com.microsoft) carry no inferred types
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        method = "dynamic: int8 weights, activations quantised at run time"
    else:
        calib = run_examples(trained, limit=CALIBRATION, split="training") or shipped_examples(
            m, limit=CALIBRATION, classes=trained.classes)
        method = _static(fp, prepared, out, calib)
    m.export_assets(trained.preprocess, out.parent, meta)  # what the graph needs beside it
    return method


def _static(fp: ExportedModel, prepared: Path, out: Path, calib: Samples) -> str:
    import onnx  # deferred on purpose, as above
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    arrays = []
    for s in calib.sources:
        try:
            arrays.append(fp.inputs.read(s))
        except ImageReadError:
            continue
    if not arrays:
        raise ExportError(f"no readable calibration images among {calib.description}")
    batches = [fp.inputs.feed(arrays[i:i + 16]) for i in range(0, len(arrays), 16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    outside = [n.name for n in onnx.load(str(prepared)).graph.node
               if not n.name.startswith("/model/backbone/")]
    with _quiet():
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, op_types_to_quantize=STATIC_OPS,
                        nodes_to_exclude=outside)
    return (f"static: the backbone with int8 weights per channel and uint8 activations "
            f"calibrated on {len(arrays)} images ({calib.description}); the head in float")


def _accuracy(fp: ExportedModel, q: ExportedModel, held: Samples | None) -> dict:
    if held is None or not len(held):
        return {"accuracy": None, "accuracy_note": "not measured: no labelled held-out data "
                "(the run's data is gone, or it has no validation examples); pass --test DATA"}
    a, kept, _ = fp.predict_logits(held.sources, skip_bad=True)
    b, _, _ = q.predict_logits([held.sources[i] for i in kept], skip_bad=True)
    y = np.array([fp.classes.index(held.labels[i]) for i in kept])
    right_fp, right_q = int((a.argmax(1) == y).sum()), int((b.argmax(1) == y).sum())
    n = len(y)
    return {"accuracy": {"fp32": right_fp / n, "int8": right_q / n,
                         "drop": (right_fp - right_q) / n, "examples": n,
                         "on": held.description, "wrong_more": right_fp - right_q,
                         "top1_agree_with_fp32": int((a.argmax(1) == b.argmax(1)).sum())}}


def _speed(fp: ExportedModel, q: ExportedModel, trained, batch: int = 16) -> dict:
    """Milliseconds per input of each model on the same batch (the median of 3 runs)."""
    samples = parity_samples(trained, limit=batch)
    items = fp.inputs.prepare(samples.sources[:batch])
    run_fp, run_q = (lambda: fp.run(items)), (lambda: q.run(items))
    n = len(items)
    out = {}
    for name, run in (("fp32", run_fp), ("int8", run_q)):
        run()  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[name] = round(sorted(times)[1] / n * 1000, 2)
    return {"ms_per_input": out, "speed_batch": n}


def _log(report: dict, parity: dict, log) -> None:
    mb = lambda b: f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.0f} kB"  # noqa: E731
    ms = report["ms_per_input"]
    log(f"int8 ({report['method']})")
    log(f"  size {mb(report['int8_bytes'])} vs {mb(report['fp32_bytes'])} fp32; "
        f"{ms['int8']:.1f} vs {ms['fp32']:.1f} ms per input (batch {report['speed_batch']})")
    acc = report.get("accuracy")
    if acc:
        log(f"  accuracy {acc['int8']:.4f} vs {acc['fp32']:.4f} fp32 on {acc['on']} (drop "
            f"{acc['drop']:+.4f}; top-1 agreement {acc['top1_agree_with_fp32']}/"
            f"{acc['examples']})")
    else:
        log(f"  accuracy {report['accuracy_note']}")
    log(f"  vs PyTorch: max |logit difference| {parity['max_abs_logit_diff']:.3f}, top-1 "
        f"agreement {parity['top1_agree']}/{parity['examples']}")


def _gate(report: dict, max_drop: float) -> None:
    acc = report.get("accuracy")
    if acc and acc["drop"] > max_drop and acc["wrong_more"] > 1:
        raise ExportError(f"int8 loses {acc['drop']:.3f} accuracy on {acc['on']} "
                          f"({acc['fp32']:.4f} -> {acc['int8']:.4f}), more than --max-drop "
                          f"{max_drop}; nothing was written. Use the fp32 export "
                          "(--format onnx), or pass a larger --max-drop")


class _quiet:
    """ONNX Runtime's quantiser logs advice through the root logger; keep it off screen."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)
