"""Your own source models: any finished headstart run (typically from `headstart pretrain`)
used as a backbone with `--backbone RUN_DIR`, exactly like a shipped one.

The run records its architecture, input size and labels; its backbone weights are loaded into
that architecture and its head becomes the backbone's source classifier (for LEEP/NCE ranking
and for measuring how much of the source task survives fine-tuning). `source.json`, written by
`headstart pretrain`, adds what data the source saw and its held-out accuracy, and
`source_sample/` keeps held-out source examples for the retention measurement.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

from .. import modalities
from ..exceptions import SourceMismatchError, WeightsError
from ..safeio import guarded
from .head import LinearHead
from .registry import BackboneConfig
from .run_files import is_run_dir, read_meta, read_state
from .weights import load_state_dict_checked

_RESOLVING: set[str] = set()  # source models being described: a run naming itself is a loop


def source_config(path: Path, resolve: Callable[[str], BackboneConfig]) -> BackboneConfig:
    """The config of the source model in run directory `path`; `resolve` describes the backbone
    its config.yaml names (zoo.get_config: a name, a cut, or another model directory)."""
    key = str(Path(path).resolve())
    if key in _RESOLVING:
        raise WeightsError(f"{path}: its config.yaml names, as its backbone, itself (directly "
                           "or through other runs); re-run `headstart pretrain` to write it again")
    _RESOLVING.add(key)
    try:
        return _source_config(path, resolve)
    finally:
        _RESOLVING.discard(key)


def _source_config(path: Path, resolve) -> BackboneConfig:
    stored, labels, meta = read_meta(path)
    if not stored.get("backbone"):
        raise WeightsError(f"{path}: config.yaml names no backbone; not a headstart run")
    base = resolve(str(stored["backbone"]))
    held = meta.get("held_out_accuracy")
    what = (f"your source model: {stored['backbone']} trained on {stored.get('data', '?')} "
            f"({meta.get('examples', stored.get('examples', '?'))} examples, {len(labels)} "
            "classes" + (f", held-out accuracy {held:.3f}" if isinstance(held, (int, float))
                         else "") + ")")
    # image_size: the name in runs written before input_size had its name
    size = stored.get("input_size", stored.get("image_size"))
    with guarded(path / "config.yaml", "the source model's input_size", "re-run `headstart "
                 "pretrain` to write it again", WeightsError):
        size = int(size or base.input_size)
    return dataclasses.replace(
        base, name=str(path), input_size=size, param_count=None, flops=None, cut_sizes=(),
        pretraining=what, weights_source=str(path / "model.safetensors"),
        num_source_classes=len(labels), source_labels=f"run:{path}",
        trained_lr=_trained_lr(stored, base),
        description=f"source model from {path.name} ({base.name})",
        factory=functools.partial(_build_source, base, path),
        weights_installed=functools.partial(is_run_dir, path))


def _trained_lr(stored: dict, base: BackboneConfig) -> float | None:
    """The top rate a source pre-trained from scratch (`headstart pretrain`) was trained at:
    its --lr, or its modality's default scratch rate; None for a run that was itself a
    transfer (its rates were those of fine-tuning something else)."""
    if stored.get("strategy") != "scratch":
        return None
    lr = stored.get("lr")
    if lr is None:
        lr = modalities.get(base.modality).default_lr.get("scratch")
    try:
        return float(lr) if lr is not None and float(lr) > 0 else None
    except (TypeError, ValueError):
        return None


def _build_source(base: BackboneConfig, path: Path, cfg: BackboneConfig, size: int,
                  pretrained: bool):
    return build_source(cfg, base, path, size, pretrained)


def _head_of(module):
    return module.source_head_


def build_source(cfg: BackboneConfig, base: BackboneConfig, path: Path, size: int,
                 pretrained: bool):
    """The architecture of the run; with `pretrained`, its weights and its head as the source
    classifier. Without (the scratch baseline), the same architecture from random init."""
    module = base.factory(base, size, pretrained=False)
    module.config = cfg
    if not pretrained:
        return module
    _, labels, _ = read_meta(path)
    state = read_state(path)
    body = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    load_state_dict_checked(module, body, source=str(path), arch=base.name)
    head = LinearHead(base.feature_dim, len(labels))
    load_state_dict_checked(head, {k[len("head."):]: v for k, v in state.items()
                                   if k.startswith("head.")},
                            source=str(path / "model.safetensors"),
                            arch=f"{base.name}'s head for {len(labels)} classes")
    head.eval()
    # plain attributes, not sub-modules: the source head is no part of the target's weights
    object.__setattr__(module, "source_head_", head)
    module.source_label_names = [str(x) for x in labels]
    module.source_classifier = functools.partial(_head_of, module)
    return module


def check_fits(cfg: BackboneConfig, *, input_size, modality) -> None:
    """Refuse a source model used with another input size or modality, listing what differs."""
    if not cfg.source_labels.startswith("run:"):
        return
    ours, theirs = modalities.get(modality), modalities.get(cfg.modality)
    diffs = []
    if theirs is not ours:
        diffs.append(("modality", theirs.name, ours.name))
    if input_size != "auto" and int(input_size) != cfg.input_size and theirs.sizes_input:
        diffs.append(("input size", f"{cfg.input_size}{theirs.size_unit}",
                      f"{input_size}{theirs.size_unit}"))
    if diffs:
        raise SourceMismatchError(cfg.name, diffs, "Transfer at the source's own input: drop "
                                  "--image-size (or pass the source's), and use a source model "
                                  "of your data's modality")
