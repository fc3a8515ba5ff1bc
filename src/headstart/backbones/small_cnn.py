"""A small CNN for small images (28-64 px: digits, icons, silhouettes, thumbnails), registered in
the zoo as the architecture to pre-train your own source model with `headstart pretrain` when no
ImageNet network fits. It ships no weights: `pretrained=True` without weights is refused."""
from __future__ import annotations

import torch
from torch import nn

from ..exceptions import WeightsError
from .registry import Backbone, BackboneConfig, drop_after, register_backbone, split_sequential


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers, then 2x2 max-pooling."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2))


class SmallCNN(Backbone):
    def __init__(self, config: BackboneConfig, image_size: int, *, pretrained: bool) -> None:
        super().__init__(config, image_size)
        if pretrained:
            raise WeightsError("small_cnn ships no pre-trained weights; pre-train a source model "
                               "with `headstart pretrain DATA --arch small_cnn --out SRC` and use "
                               "--backbone SRC, or train it with --strategy scratch")
        widths = (32, 64, 128, config.feature_dim)
        self.block1 = _block(3, widths[0])
        self.block2 = _block(widths[0], widths[1])
        self.block3 = _block(widths[1], widths[2])
        self.block4 = _block(widths[2], widths[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (block,) in self.group_modules().values():
            x = block(x)
        return x.mean(dim=(2, 3))

    def group_modules(self) -> dict[str, list[nn.Module]]:
        return {g: [getattr(self, g)] for g in self.config.layer_groups}

    def split_at(self, group: str):
        return split_sequential(self, group)

    def truncate_after(self, group: str) -> bool:
        return drop_after(self, group)


register_backbone(BackboneConfig(
    name="small_cnn", modality="image", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    feature_dim=256, layer_groups=("block1", "block2", "block3", "block4"),
    pretraining="none shipped: pre-train it with `headstart pretrain`", license="Apache-2.0",
    weights_source="your own source model", min_size=16,
    description="8-layer CNN for 28-64 px images", factory=SmallCNN,
    param_count=1173216, flops=105578496, cut_sizes=(("block3", 287456, 77266944),),
))
