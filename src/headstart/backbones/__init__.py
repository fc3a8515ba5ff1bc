"""The zoo of pre-trained backbones. The package imports its members, which register
themselves (as timm's models/__init__ does); zoo.py resolves names, directories and cuts."""
from .registry import (Backbone, BackboneConfig, count_flops, count_parameters, list_backbones,
                       register_backbone)
from . import efficientnet_lite, small_cnn, text, tiny  # noqa: F401  (registering)
from .weights import cache_dir, load_weights
from .zoo import create_backbone, default_cuts, get_config
from .sizes import Size, size_of

__all__ = ["Backbone", "BackboneConfig", "count_flops", "count_parameters", "create_backbone",
           "default_cuts", "get_config", "list_backbones", "register_backbone", "cache_dir",
           "load_weights", "Size", "size_of"]
