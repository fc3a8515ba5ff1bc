"""The zoo of pre-trained backbones."""
from .registry import (Backbone, BackboneConfig, count_flops, count_parameters, create_backbone,
                       get_config, list_backbones, register_backbone)
from .weights import cache_dir, load_weights

__all__ = ["Backbone", "BackboneConfig", "count_flops", "count_parameters", "create_backbone",
           "get_config", "list_backbones", "register_backbone", "cache_dir", "load_weights"]
