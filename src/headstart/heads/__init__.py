"""The new head that replaces a backbone's source classifier, and the model that joins them."""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import Backbone


class LinearHead(nn.Module):
    """Standardise, dropout, then one linear layer from pooled features to the user's classes.

    The standardisation (`shift`, `scale`: buffers, set when the head is fitted on cached
    features) keeps dropout acting on centred features: on raw features whose mean is large
    next to their spread (L2-normalised text embeddings, post-ReLU image features) dropping a
    dimension moves the logits by its mean, not by its signal, and the first fine-tuning steps
    would start from a wrecked head."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        # calibration (temperature scaling): logits are divided by it; 1 while training
        self.register_buffer("temperature", torch.ones(()))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout((features - self.shift) * self.scale)) / self.temperature

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # runs saved before calibration existed have no temperature: they were uncalibrated
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def set_fit(self, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                std: torch.Tensor) -> None:
        """Load a head fitted on standardised features ((f - mean) / std)."""
        self.shift.copy_(mean)
        self.scale.copy_(1.0 / std)
        self.fc.weight.copy_(weight)
        self.fc.bias.copy_(bias)
        self.temperature.fill_(1.0)  # a new fit is not calibrated yet

    @torch.no_grad()
    def raw_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the same affine map acting on raw features (temperature
        included)."""
        w = self.fc.weight * self.scale / self.temperature
        return w.clone(), (self.fc.bias / self.temperature - w @ self.shift)


class TransferModel(nn.Module):
    """Backbone + head, with one BatchNorm policy applied on every `train()` call:

    - frozen layer groups (`frozen`) run wholly in inference mode: BatchNorm uses and keeps its
      running statistics, dropout and drop-connect are off;
    - with `keep_bn_stats` (the default when starting from pre-trained weights) every BatchNorm
      layer keeps its pre-trained running statistics, while the affine weights of unfrozen
      groups still learn. Small fine-tuning batches would otherwise replace statistics
      estimated on the source data with noisy ones and shift every feature the new head was
      fitted on (measured: loss 0.09 -> 24 on the same batch). `scratch` updates them.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen: tuple[str, ...] = ()
        self.keep_bn_stats = False

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        """Logits; with embed=True the backbone's features (the pair objective trains on them,
        through the same module so that DistributedDataParallel sees the call)."""
        features = self.backbone(x)
        return features if embed else self.head(features)

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if mode and self.frozen:
            groups = self.backbone.group_modules()
            for g in self.frozen:
                for m in groups[g]:
                    m.eval()
        if mode and self.keep_bn_stats:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
