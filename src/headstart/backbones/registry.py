"""The zoo: a registry of named backbones described by data, built on request."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..exceptions import UnknownBackboneError


@dataclass(frozen=True)
class BackboneConfig:
    """What a user (and the rest of headstart) needs to know about a backbone."""

    name: str
    modality: str  # "image" or "text"
    input_size: int  # native input size in pixels (square)
    mean: tuple[float, float, float]  # normalisation of [0,1] RGB pixels
    std: tuple[float, float, float]
    feature_dim: int
    layer_groups: tuple[str, ...]  # ordered early -> late
    pretraining: str  # what the weights were trained on
    license: str
    weights_source: str  # where the weights come from
    num_source_classes: int = 0  # size of the pre-training classifier kept for `predict`
    source_labels: str = ""  # "imagenet-1k" when the source classifier's names are known
    min_size: int = 32
    tokenizer: str = ""  # text: the directory of the tokenizer files
    description: str = ""
    cut_of: str = ""  # a layer cut (NAME@GROUP): the backbone it cuts, and the group it ends at
    cut: str = ""
    factory: Callable[..., "Backbone"] = field(default=None, compare=False, repr=False)
    weights_installed: Callable[[], bool] = field(default=lambda: False, compare=False,
                                                  repr=False)


class Backbone(nn.Module):
    """A network body: a batch of images in, pooled features out, parameters by layer group."""

    config: BackboneConfig

    def __init__(self, config: BackboneConfig, image_size: int) -> None:
        super().__init__()
        self.config = config
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N,3,S,S) -> (N, feature_dim)
        raise NotImplementedError

    feature_layers = 1  # text encoders may pool several top layers (set_feature_layers)

    @property
    def feature_dim(self) -> int:
        """Size of the features this backbone puts out (config.feature_dim per pooled layer)."""
        return self.config.feature_dim * self.feature_layers

    def set_feature_layers(self, k: int) -> None:
        if int(k) != 1:
            from ..exceptions import ConfigError
            raise ConfigError(f"--layers {k}: only text encoders pool several layers; use 1 "
                              f"(or auto) with '{self.config.name}'")

    def group_modules(self) -> dict[str, list[nn.Module]]:
        """Modules of each layer group, in the order of config.layer_groups."""
        raise NotImplementedError

    def source_classifier(self) -> nn.Module | None:
        """The pre-training classifier (features -> source logits), when there is one."""
        return None

    def truncate_after(self, group: str) -> bool:
        """End the network after layer group `group`, dropping the later layers, so that
        forward returns the pooled output of that group (see backbones/cut.py). False when
        this backbone cannot: a cut of it is then tapped with a hook (eager PyTorch only)."""
        return False

    def group_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {g: [p for m in mods for p in m.parameters()]
                for g, mods in self.group_modules().items()}


def drop_after(backbone: Backbone, group: str, *, extra: tuple[str, ...] = ()) -> bool:
    """truncate_after for a backbone whose groups are attributes of that name run in order:
    delete the groups after `group` (and the `extra` attributes, e.g. a source classifier)."""
    order = backbone.config.layer_groups
    for g in order[order.index(group) + 1:] + extra:
        if hasattr(backbone, g):  # a cut of a cut has lost them already
            delattr(backbone, g)
    return True


_REGISTRY: dict[str, BackboneConfig] = {}
# the zoo's default for each kind of data
DEFAULT_BACKBONE = {"image": "efficientnet_lite0", "text": "minilm_l6"}


def register_backbone(config: BackboneConfig) -> BackboneConfig:
    """Add a backbone to the zoo (a later registration of the same name replaces it)."""
    _REGISTRY[config.name] = config
    return config


def get_config(name: str) -> BackboneConfig:
    _ensure_builtins()
    key = name.replace("-", "_").lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if Path(name).is_dir():  # a model directory: described on request, not listed in the zoo
        path = Path(name).resolve()
        stamp = max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0)
        return config_from_dir(path, stamp)
    from .cut import cut_config, split_cut
    base, group = split_cut(name)
    if group is not None:  # NAME@GROUP: the backbone ended after one of its layer groups
        return cut_config(get_config(base), group)
    raise UnknownBackboneError(name, _REGISTRY)


@functools.lru_cache(maxsize=64)
def config_from_dir(path: Path, stamp: int = 0) -> BackboneConfig:
    """A backbone from a local model directory: a headstart source model (run directory) or a
    Hugging Face / sentence-transformers directory. `stamp` (the files' latest modification)
    keys the cache, so a directory written again is read again."""
    from ..exceptions import WeightsError
    from .text import text_config

    from .source import is_run_dir, source_config

    path = path.resolve()
    if is_run_dir(path):
        return source_config(path)
    if (path / "config.json").is_file():
        return text_config(str(path), str(path))
    raise WeightsError(f"{path}: not a model directory headstart can read (expected a source "
                       "model from `headstart pretrain` or `train`, or a Hugging Face / "
                       "sentence-transformers directory with config.json)")


def list_backbones() -> list[BackboneConfig]:
    _ensure_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_backbone(name: str, *, pretrained: bool = True, image_size: int | None = None,
                    weights: str | None = None) -> Backbone:
    """Build a backbone by name.

    pretrained: load its shipped weights (False gives random init, the `scratch` baseline).
    weights: a local file or directory, or a URL, to load instead (see `load_weights`).
    """
    from .weights import load_weights

    config = get_config(name)
    if config.cut_of:  # weights load into the whole network, which is then cut
        from .cut import truncate
        return truncate(create_backbone(config.cut_of, pretrained=pretrained,
                                        image_size=image_size, weights=weights), config.cut)
    size = int(image_size or config.input_size)
    module = config.factory(config, size, pretrained=pretrained and weights is None)
    if weights is not None:
        load_weights(module, weights)
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dummy_input(config: BackboneConfig, size: int, batch: int = 1):
    """A zero input of the backbone's kind: images, or full windows of `size` tokens."""
    if config.modality == "text":
        ids = torch.zeros(batch, size, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "doc": torch.arange(batch), "n_docs": batch}
    return torch.zeros(batch, 3, size, size)


def count_flops(backbone: Backbone, size: int | None = None) -> int:
    """Floating-point operations (2 per multiply-add) of one forward pass of one image, or of
    one full window of text (convolutions and linear layers; attention's own products, about
    a tenth more at 256 tokens, are not counted)."""
    size = size or backbone.image_size
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
            total += 2 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in backbone.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(dummy_input(backbone.config, size))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    return total


_LOADED = False


def _ensure_builtins() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import efficientnet_lite, small_cnn, text, tiny  # noqa: F401  (self-registering)
