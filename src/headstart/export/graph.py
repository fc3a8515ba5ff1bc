"""The exported graphs: the run's whole model, traced through its own forward.

Nothing of the model is re-implemented here. The image graph adds only what sits in front of
the model in `headstart predict` (uint8 NHWC -> normalised NCHW, the flip averaging the run was
trained for) and a softmax behind it; the text graph takes the backbone's own batch of token
windows, which the backbone pools per document. Backbone, cut, head and calibration
are whatever the model's forward does.
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


class ImageGraph(nn.Module):
    """uint8 RGB images (N, S, S, 3) -> (logits, probabilities), both (N, classes)."""

    def __init__(self, model: nn.Module, *, mean, std, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.flip = flip

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        if self.flip:  # the mean of the logits of the image and its mirror, as predict does
            n = x.shape[0]
            both = self.model(torch.cat([x, x.flip(3)], dim=0))
            logits = (both[:n] + both[n:]) / 2
        else:
            logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


class TextGraph(nn.Module):
    """Token windows -> (logits, probabilities) (D, classes): input_ids and attention_mask
    (windows, tokens) int64, and doc (windows,) int64, the document (0..D-1, in order) each
    window belongs to: the backbone's own batch, pooled over each document's windows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, doc: torch.Tensor):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "doc": doc,
                 "n_docs": doc.max() + 1}  # a tensor: the number of documents stays dynamic
        logits = self.model(batch)
        return logits, torch.softmax(logits, dim=1)


def image_dummy(size: int) -> tuple[torch.Tensor]:
    return (torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0)),)


def text_dummy(ids_by_doc: list[list[list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """A batch of documents' windows (tracing needs padding in it, so that no masking branch
    is traced away)."""
    from .runtime import flat_windows

    return tuple(torch.from_numpy(a) for a in flat_windows(ids_by_doc, pad_id))


def to_onnx(graph: nn.Module, dummy: tuple, path: Path, *, modality: str) -> None:
    """Trace `graph` on `dummy` and write it to `path` with dynamic batch axes."""
    if modality == "text":
        names = ["input_ids", "attention_mask", "doc"]
        axes = {"input_ids": {0: "windows", 1: "tokens"}, "attention_mask": {0: "windows",
                1: "tokens"}, "doc": {0: "windows"}}
        rows = "documents"
    else:
        names, axes, rows = ["images"], {"images": {0: "batch"}}, "batch"
    axes.update({"logits": {0: rows}, "probabilities": {0: rows}})
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


def optimize_text(path: Path, model: nn.Module) -> str:
    """Fuse attention, GELU and layer norms with ONNX Runtime's transformer optimizer, for
    BERT-style encoders; returns what was fused ("" when nothing was). The parity check runs on
    the result."""
    hf = next((m.config for m in model.modules() if hasattr(getattr(m, "config", None),
                                                            "num_attention_heads")), None)
    if hf is None or getattr(hf, "model_type", "") not in ("bert", "roberta", "xlm-roberta"):
        return ""
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
