"""Tracing the run's whole model into ONNX, through its own forward.

Nothing of the model is re-implemented here. What sits in front of it is the modality's
(Modality.export_graph: for images uint8 NHWC -> normalised NCHW and the flip averaging the run
was trained for; for texts the backbone's own batch of token windows), and a softmax behind it.
Backbone, cut, head and calibration are whatever the model's forward does.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17
EXPORTER = "torch.onnx.export (TorchScript tracer, dynamo=False)"


def to_onnx(graph: nn.Module, dummy: tuple, path: Path, *, inputs) -> None:
    """Trace `graph` on `dummy` and write it to `path` with dynamic batch axes; `inputs` is
    (input names, their dynamic axes, the output rows' axis), Modality.onnx_inputs()."""
    names, axes, rows = inputs
    axes = {**axes, "logits": {0: rows}, "probabilities": {0: rows}}
    graph.eval()  # stays in eval: the caller restores the model's own mode
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes
        torch.onnx.export(graph, dummy, str(path), input_names=names,
                          output_names=["logits", "probabilities"], opset_version=OPSET,
                          dynamo=False, dynamic_axes=axes)


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Trace Hugging Face encoders with their plain ("eager") attention: the same product and
    softmax as SDPA, in a pattern ONNX Runtime's transformer optimizer can fuse (measured on
    MiniLM-L6: 4.6 texts/s traced from SDPA, 6.4 eager and fused, PyTorch 5.4)."""
    configs = [m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")]
    old = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = "eager"
        yield
    finally:
        for c, a in zip(configs, old):
            c._attn_implementation = a


def optimize_transformer(path: Path, model: nn.Module) -> str | None:
    """Fuse attention, GELU and layer norms with ONNX Runtime's transformer optimizer, for
    BERT-style encoders; returns what was fused ("" when nothing was), None for a model with
    no Hugging Face encoder in it. The parity check runs on the result."""
    hf = next((m.config for m in model.modules() if hasattr(getattr(m, "config", None),
                                                            "num_attention_heads")), None)
    if hf is None:
        return None
    if getattr(hf, "model_type", "") not in ("bert", "roberta", "xlm-roberta"):
        return ""
    # deferred on purpose: the optimizer pulls in onnxruntime's transformer tools
    from onnxruntime.transformers.optimizer import optimize_model

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the optimizer reports through the root logger
    try:
        opt = optimize_model(str(path), model_type="bert", num_heads=hf.num_attention_heads,
                             hidden_size=hf.hidden_size)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(path))
    finally:
        root.setLevel(level)
    return ", ".join(f"{v} {k}" for k, v in fused.items())
