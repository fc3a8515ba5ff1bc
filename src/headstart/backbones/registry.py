"""The zoo's registry: backbones described by data (BackboneConfig), registered by the modules
that define them (efficientnet_lite.py, small_cnn.py, text.py, tiny.py, imported by the
package), and the Backbone interface every one implements. Names are resolved into configs
and modules by zoo.py (registered names, model directories, layer cuts)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import modalities
from ..exceptions import ConfigError


def always() -> bool:
    """weights_installed of a backbone whose weights are built in."""
    return True


def never() -> bool:
    """weights_installed of a backbone that ships no weights."""
    return False


@dataclass(frozen=True)
class BackboneConfig:
    """What a user (and the rest of headstart) needs to know about a backbone."""

    name: str
    modality: str  # the name of its modality (modalities/): "image", "text"
    # native input size, in the modality's unit: an image side in pixels, a text window in
    # tokens
    input_size: int
    mean: tuple[float, float, float]  # images: normalisation of [0,1] RGB pixels
    std: tuple[float, float, float]
    feature_dim: int
    layer_groups: tuple[str, ...]  # ordered early -> late
    pretraining: str  # what the weights were trained on
    license: str
    weights_source: str  # where the weights come from
    num_source_classes: int = 0  # size of the pre-training classifier kept for `predict`
    source_labels: str = ""  # "imagenet-1k" when the source classifier's names are known
    min_size: int = 32  # the smallest input size worth measuring
    tokenizer: str = ""  # texts: the directory of the tokenizer files
    description: str = ""
    cut_of: str = ""  # a layer cut (NAME@GROUP): the backbone it cuts, and the group it ends at
    cut: str = ""
    # its size as `headstart models` lists it: parameters and FLOPs of one example at
    # input_size (count_parameters, count_flops of the network built without weights).
    # Recorded for the shipped backbones (tests/test_cli.py checks them against a fresh count);
    # None: counted once and cached (sizes.py). A config derived with replace() resets them.
    param_count: int | None = None
    flops: int | None = None
    # the same of its default cuts (zoo.default_cuts), as (group, parameters, flops): what a
    # run's cut measurement weighs them by, without building and counting them on a first run
    cut_sizes: tuple[tuple[str, int, int], ...] = ()
    # a source model you pre-trained (headstart pretrain: from scratch): the top learning rate
    # it was trained at, which fine-tuning it continues at by default (training/model.py:
    # tune_source); None for the shipped backbones
    trained_lr: float | None = None
    # module-level functions (or partials of them), so that a model and its config pickle
    factory: Callable[..., "Backbone"] = field(default=None, compare=False, repr=False)
    weights_installed: Callable[[], bool] = field(default=never, compare=False, repr=False)


class Backbone(nn.Module):
    """A network body: a batch of its modality's inputs in, pooled features out, parameters by
    layer group."""

    config: BackboneConfig

    def __init__(self, config: BackboneConfig, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_size = input_size

    @property
    def image_size(self) -> int:
        """Deprecated name of input_size."""
        return self.input_size

    def forward(self, x) -> torch.Tensor:  # a batch -> (N, feature_dim)
        raise NotImplementedError

    feature_layers = 1  # text encoders may pool several top layers (set_feature_layers)

    @property
    def feature_dim(self) -> int:
        """Size of the features this backbone puts out (config.feature_dim per pooled layer)."""
        return self.config.feature_dim * self.feature_layers

    def set_feature_layers(self, k: int) -> None:
        if int(k) != 1:
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

    def split_at(self, group: str):
        """The network as two functions around layer group `group`: (below, rest), where
        below(x) runs the groups before `group` and rest(h) the groups from `group` on, ending
        in the pooled features, so that rest(below(x)) == forward(x). The trainer runs below
        once on frozen groups and caches its output (training/prefix.py). None where this
        backbone cannot split there (the default)."""
        return None

    def group_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {g: [p for m in mods for p in m.parameters()]
                for g, mods in self.group_modules().items()}

    def attention_dropout(self, p: float):
        """A context in which dropout on attention probabilities is `p` (transformers; a
        network without attention: nothing to set)."""
        return contextlib.nullcontext()

    def token_table(self) -> nn.Parameter | None:
        """A text encoder's token-embedding table, which pair training leaves as pre-trained
        (strategies/plan.py: apply_phase); None for a network without one."""
        return None


def split_sequential(backbone: Backbone, group: str):
    """split_at for a backbone whose groups run one after another (one module each) and whose
    features are the spatial mean of the last group's map."""
    groups = backbone.group_modules()
    order = list(groups)
    if group not in order or order.index(group) == 0:
        return None
    at = order.index(group)

    def run(x, names):
        for g in names:
            for m in groups[g]:
                x = m(x)
        return x

    return (lambda x: run(x, order[:at]),
            lambda h: run(h, order[at:]).mean(dim=(2, 3)))


def drop_after(backbone: Backbone, group: str, *, extra: tuple[str, ...] = ()) -> bool:
    """truncate_after for a backbone whose groups are attributes of that name run in order:
    delete the groups after `group` (and the `extra` attributes, e.g. a source classifier)."""
    order = backbone.config.layer_groups
    for g in order[order.index(group) + 1:] + extra:
        if hasattr(backbone, g):  # a cut of a cut has lost them already
            delattr(backbone, g)
    return True


_REGISTRY: dict[str, BackboneConfig] = {}


def register_backbone(config: BackboneConfig) -> BackboneConfig:
    """Add a backbone to the zoo (a later registration of the same name replaces it)."""
    _REGISTRY[config.name] = config
    return config


def registered(name: str) -> BackboneConfig | None:
    """The zoo's config of `name` (dashes or capitals allowed), or None."""
    return _REGISTRY.get(name.replace("-", "_").lower())


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def list_backbones() -> list[BackboneConfig]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dummy_input(config: BackboneConfig, size: int, batch: int = 1):
    """A zero input of the backbone's modality: images, or full windows of `size` tokens."""
    return modalities.get(config.modality).dummy_input(size, batch)


def count_flops(backbone: Backbone, size: int | None = None) -> int:
    """Floating-point operations (2 per multiply-add) of one forward pass of one image, or of
    one full window of text, as torch.utils.flop_counter counts them: convolutions and matrix
    products (a CPU run's fused attention kernels, about a tenth more at 256 tokens, are not
    among the operators it counts)."""
    size = size or backbone.input_size
    was_training = backbone.training
    counter = FlopCounterMode(display=False)
    try:
        backbone.eval()
        with torch.no_grad(), counter:
            backbone(dummy_input(backbone.config, size))
    finally:
        backbone.train(was_training)
    return int(counter.get_total_flops())
