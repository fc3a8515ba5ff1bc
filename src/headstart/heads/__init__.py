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
    """Backbone + head. `frozen` names layer groups whose BatchNorm stays in inference mode
    (running statistics unchanged) whatever `train()` says: the one BatchNorm policy."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if mode and self.frozen:
            groups = self.backbone.group_modules()
            for g in self.frozen:
                for m in groups[g]:
                    m.eval()
        return self
