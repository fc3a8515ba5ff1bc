"""The new head that replaces a backbone's source classifier, and the model that joins them."""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import Backbone


class LinearHead(nn.Module):
    """Dropout then one linear layer from pooled features to the user's classes."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

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
