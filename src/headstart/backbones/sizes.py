"""How big a backbone is, as `headstart models` lists it: its parameters and the FLOPs of one
example at its native input size. The shipped backbones record theirs on their BackboneConfig
(param_count, flops; tests/test_cli.py checks them against a fresh count, so they cannot
drift); any other is built once and its count kept in the cache, so that listing the zoo
never builds a network twice."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..cache import cache_dir
from ..exceptions import DamagedFileError
from ..safeio import read_json, write_bytes_atomic
from ..version import __version__
from .registry import BackboneConfig, count_flops, count_parameters
from .zoo import create_backbone

CACHE_FILE = "backbone-sizes.json"


@dataclass(frozen=True)
class Size:
    parameters: int
    flops: int  # one example (image, or full text window) at the native input size


def measure(name: str) -> Size:
    """A fresh count: the backbone built without weights, counted."""
    module = create_backbone(name, pretrained=False)
    return Size(count_parameters(module), count_flops(module))


def size_of(config: BackboneConfig) -> Size:
    """The recorded size of a registered backbone, else the cached count, else a fresh one
    (then cached)."""
    if config.param_count is not None and config.flops is not None:
        return Size(config.param_count, config.flops)
    path, key = cache_dir() / CACHE_FILE, cache_key(config)
    known = _read(path)
    if key in known:
        return Size(**known[key])
    size = measure(config.name)
    known[key] = asdict(size)
    write_bytes_atomic(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
    return size


def cache_key(config: BackboneConfig) -> str:
    """What a count depends on: the description, the code that builds it, headstart's version."""
    factory = getattr(config.factory, "func", config.factory)  # a partial's function
    return json.dumps([__version__, config.name, config.modality, config.input_size,
                       config.feature_dim, list(config.layer_groups), config.weights_source,
                       config.cut_of, config.cut, getattr(factory, "__module__", ""),
                       getattr(factory, "__qualname__", repr(factory))])


def _read(path) -> dict:
    """The cached counts; a damaged or foreign file counts as empty (it is rewritten)."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path, what="the cache of backbone sizes", fix="it is rewritten",
                         expect=dict)
    except DamagedFileError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)
            and set(v) == {"parameters", "flops"}
            and all(type(n) is int and n >= 0 for n in v.values())}
