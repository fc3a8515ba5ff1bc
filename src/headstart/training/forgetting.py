"""Guarding and measuring catastrophic forgetting.

- L2-SP (Li, Grandvalet & Davoine, ICML 2018): while fine-tuning, penalise the squared distance
  of the backbone's weights from their pre-trained values, alpha/2 * ||w - w0||^2, instead of
  decaying them towards zero (the head keeps ordinary weight decay).
- Drift: how far each layer group moved, ||w - w0|| / ||w0|| over the group's weights.
- Retention: the source task's accuracy (source head on held-out source examples) before and
  after fine-tuning, when the source model has a head and a sample of its data.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..backbones.run_files import SOURCE_SAMPLE, read_meta
from ..heads import TransferModel
from ..modalities import load_dataset
from .predict import predict_logits


class L2SP:
    """The penalty towards the starting point of every backbone parameter."""

    def __init__(self, backbone: nn.Module, alpha: float) -> None:
        self.alpha = float(alpha)
        self.pairs = [(p, p.detach().clone()) for p in backbone.parameters()]

    def penalty(self) -> torch.Tensor:
        total = torch.zeros((), device=self.pairs[0][0].device if self.pairs else None)
        for p, p0 in self.pairs:
            if p.requires_grad:
                total = total + (p - p0).pow(2).sum()
        return 0.5 * self.alpha * total


def snapshot(backbone: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The weights of each layer group, copied: the reference for drift."""
    return {g: [p.detach().clone() for p in ps] for g, ps in backbone.group_parameters().items()}


def group_drift(backbone: nn.Module, reference: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Relative L2 distance of each layer group from the reference (0 = unchanged)."""
    out = {}
    for g, ps in backbone.group_parameters().items():
        if not ps:
            continue
        num = sum(float((p.detach() - r).pow(2).sum()) for p, r in zip(ps, reference[g]))
        den = sum(float(r.pow(2).sum()) for r in reference[g])
        out[g] = round((num / max(den, 1e-12)) ** 0.5, 6)
    return out


def source_accuracy(backbone, head: nn.Module, sample, pre, *, progress: bool = False) -> float:
    """Accuracy of the source head on a labelled sample of the source task."""
    names = backbone.source_label_names
    model = TransferModel(backbone, head)
    logits = predict_logits(model, sample, pre, flip=False, engine="torch", progress=progress)
    truth = [names.index(y) if y in names else -1 for y in sample.labels]
    return float((logits.argmax(1) == torch.tensor(truth).numpy()).mean())


def source_sample(backbone):
    """Held-out examples of the source task kept with a source model, or None."""
    if getattr(backbone, "source_head_", None) is None:
        return None
    folder = Path(backbone.config.name) / SOURCE_SAMPLE
    if not folder.is_dir():
        return None
    sample = load_dataset(folder, min_classes=1, modality=backbone.config.modality)
    # class folders are safe names of the labels: source.json maps back the ones that differ
    _, _, meta = read_meta(folder.parent)
    names = meta.get("source_sample_folders")
    names = names if isinstance(names, dict) else {}
    sample.labels = [str(names.get(y, y)) for y in sample.labels]
    return sample


class ForgettingMonitor:
    """Taken before fine-tuning, read after it: drift per group and source-task retention."""

    def __init__(self, backbone, pre, *, progress: bool = False) -> None:
        self.reference = snapshot(backbone)
        self.sample = source_sample(backbone)
        self.pre, self.progress = pre, progress
        self.before = None if self.sample is None else source_accuracy(
            backbone, backbone.source_head_, self.sample, pre, progress=progress)

    def report(self, backbone) -> dict:
        out: dict = {"drift": group_drift(backbone, self.reference)}
        if self.sample is None:
            out["retention"] = None
            out["retention_note"] = ("not measured: the source model keeps no head or no "
                                     "held-out source examples (neither ImageNet's images nor "
                                     "the text encoder's training pairs ship; a source model "
                                     "from `headstart pretrain` keeps both)")
            return out
        after = source_accuracy(backbone, backbone.source_head_, self.sample, self.pre,
                                progress=self.progress)
        out["retention"] = {"source_accuracy_before": round(self.before, 4),
                            "source_accuracy_after": round(after, 4),
                            "retained": round(after / max(self.before, 1e-9), 4),
                            "source_examples": len(self.sample)}
        return out


def describe(report: dict) -> list[str]:
    drift = report["drift"]
    lines = ["drift of the kept weights from the pre-trained ones (relative L2, per group): " +
             ", ".join(f"{g} {v:.3f}" for g, v in drift.items())]
    r = report["retention"]
    if r:
        lines.append(f"source task retained: accuracy {r['source_accuracy_before']:.3f} before, "
                     f"{r['source_accuracy_after']:.3f} after fine-tuning "
                     f"({r['source_examples']} held-out source examples)")
    return lines
