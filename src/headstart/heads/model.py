"""The model a run trains and saves: a backbone and the new head, with one BatchNorm policy."""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import Backbone


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
        # a piece of a step cut between long documents' windows asks for its unpooled sums
        # (training/steps.py): the head waits for the whole documents
        partial = isinstance(x, dict) and bool(x.get("partial_sums"))
        return features if embed or partial else self.head(features)

    def logits_of_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The logits of documents given their windows' sums (TextBackbone.forward)."""
        return self.head(self.backbone.pool_sums(sums))

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
