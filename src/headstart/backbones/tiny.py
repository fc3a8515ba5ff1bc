"""A tiny backbone for fast tests and quick experiments (random weights, 32 px)."""
from __future__ import annotations

import torch
from torch import nn

from .registry import (Backbone, BackboneConfig, always, drop_after, register_backbone,
                       split_sequential)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyCNN(Backbone):
    def __init__(self, config: BackboneConfig, image_size: int, *, pretrained: bool) -> None:
        super().__init__(config, image_size)
        # "pretrained" tiny weights are a fixed random init; scratch draws from the global seed
        with torch.random.fork_rng(devices=[], enabled=pretrained):
            if pretrained:
                torch.manual_seed(0)
            self.stem = _block(3, 8, 2)
            self.block1 = _block(8, 16, 2)
            self.block2 = _block(16, config.feature_dim, 2)
            self.fc = nn.Linear(config.feature_dim, config.num_source_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (block,) in self.group_modules().values():
            x = block(x)
        return x.mean(dim=(2, 3))

    def group_modules(self) -> dict[str, list[nn.Module]]:
        return {g: [getattr(self, g)] for g in self.config.layer_groups}

    def source_classifier(self) -> nn.Module | None:
        return getattr(self, "fc", None)

    def split_at(self, group: str):
        return split_sequential(self, group)

    def truncate_after(self, group: str) -> bool:
        return drop_after(self, group, extra=("fc",))


register_backbone(BackboneConfig(
    name="tiny_cnn", modality="image", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    feature_dim=32, layer_groups=("stem", "block1", "block2"),
    pretraining="none (fixed random init; for tests)", license="Apache-2.0",
    weights_source="built in", num_source_classes=10, min_size=8,
    description="3-layer CNN for unit tests", factory=TinyCNN,
    weights_installed=always, param_count=6418, flops=405504,
    cut_sizes=(("block1", 1416, 258048),),
))
