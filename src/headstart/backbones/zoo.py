"""Names to backbones: a registered name, a model directory (a headstart run used as a source
model, or a Hugging Face / sentence-transformers folder), or a layer cut NAME@GROUP of any of
them; and building the module behind a name."""
from __future__ import annotations

import functools
from pathlib import Path

from ..exceptions import UnknownBackboneError, WeightsError
from .cut import check_cut_name, describe_cut, split_cut, truncate
from .cut import default_cuts as _default_cuts
from .registry import Backbone, BackboneConfig, registered, registered_names
from .run_files import is_run_dir
from .source import source_config
from .text import text_config
from .weights import load_weights


def get_config(name: str) -> BackboneConfig:
    found = registered(name)
    if found is not None:
        return found
    if Path(name).is_dir():  # a model directory: described on request, not listed in the zoo
        path = Path(name).resolve()
        stamp = max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0)
        return config_from_dir(path, stamp)
    base, group = split_cut(name)
    if group is not None:  # NAME@GROUP: the backbone ended after one of its layer groups
        return cut_config(get_config(base), group)
    raise UnknownBackboneError(name, registered_names())


@functools.lru_cache(maxsize=64)
def config_from_dir(path: Path, stamp: int = 0) -> BackboneConfig:
    """A backbone from a local model directory: a headstart source model (run directory) or a
    Hugging Face / sentence-transformers directory. `stamp` (the files' latest modification)
    keys the cache, so a directory written again is read again."""
    path = path.resolve()
    if is_run_dir(path):
        return source_config(path, get_config)
    if (path / "config.json").is_file():
        return text_config(str(path), str(path))
    raise WeightsError(f"{path}: not a model directory headstart can read (expected a source "
                       "model from `headstart pretrain` or `train`, or a Hugging Face / "
                       "sentence-transformers directory with config.json)")


@functools.lru_cache(maxsize=64)
def cut_config(base: BackboneConfig, group: str) -> BackboneConfig:
    """The description of BASE@GROUP (built once to learn its feature size)."""
    check_cut_name(base, group)
    return describe_cut(base, group, truncate(create_backbone(base.name, pretrained=False),
                                              group))


def default_cuts(name: str) -> list[str]:
    """Two earlier layer groups of backbone `name` to measure or rank cuts after."""
    return _default_cuts(get_config(name))


def create_backbone(name: str, *, pretrained: bool = True, input_size: int | None = None,
                    weights: str | None = None, image_size: int | None = None) -> Backbone:
    """Build a backbone by name.

    pretrained: load its shipped weights (False gives random init, the `scratch` baseline).
    input_size: the input it is built for (an image side; texts: the window), default native.
    weights: a local file or directory, or a URL, to load instead (see `load_weights`).
    image_size: the former name of input_size.
    """
    config = get_config(name)
    input_size = input_size or image_size
    if config.cut_of:  # weights load into the whole network, which is then cut
        return truncate(create_backbone(config.cut_of, pretrained=pretrained,
                                        input_size=input_size, weights=weights), config.cut)
    size = int(input_size or config.input_size)
    module = config.factory(config, size, pretrained=pretrained and weights is None)
    if weights is not None:
        load_weights(module, weights)
    return module
