"""`headstart export RUN`: the run's classifier as a self-contained ONNX file, checked."""
from __future__ import annotations

from ..export import FORMATS, TOLERANCE


def add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to ONNX (checked against PyTorch); "
                       "predict, evaluate and serve then run it with ONNX Runtime")
    p.add_argument("run", help="a run directory from `headstart train`")
    p.add_argument("--format", default="onnx", choices=list(FORMATS),
                   help="onnx (default): fp32, the whole classifier; onnx-int8: 8-bit for phones "
                   "and small devices, its accuracy drop, size and speed measured")
    p.add_argument("--out", help="the .onnx file to write (default RUN/model.onnx, or "
                   "RUN/model.int8.onnx; predict and evaluate use RUN/model.onnx)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest |logit "
                   f"difference| to PyTorch accepted (default {TOLERANCE:g})")
    p.add_argument("--samples", type=int, default=32, help="real inputs the parity check runs "
                   "on (the run's validation examples, else the shipped data)")
    p.add_argument("--test", help="onnx-int8: labelled held-out data to measure the accuracy "
                   "drop on (default: the run's validation examples, or the shipped hold-out)")
    p.add_argument("--heldout", type=int, default=200, help="onnx-int8: at most this many "
                   "held-out examples (spread over the classes)")
    p.add_argument("--max-drop", type=float, default=0.02, help="onnx-int8: refuse when "
                   "accuracy drops by more than this (and by more than one example)")
    p.add_argument("--overwrite", action="store_true", help="replace a file at --out that is "
                   "not a headstart export")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from .. import api, modalities  # deferred on purpose: torch, which `--help` does not need
    from ..export import export_run

    trained = api.load(args.run)
    result = export_run(trained, args.out, fmt=args.format, tolerance=args.tolerance,
                        samples=args.samples, test=args.test, max_drop=args.max_drop,
                        heldout=args.heldout, overwrite=args.overwrite)
    meta = result.meta
    inputs, what = modalities.get(meta["modality"]).describe_export(meta, result.path)
    print(f"wrote {result.path} ({meta['model_bytes'] / 1e6:.1f} MB, opset {meta['opset']}): "
          f"{len(meta['labels'])} classes from {inputs}")
    print(f"sidecar {result.sidecar}: {what}, parity")
    return 0
