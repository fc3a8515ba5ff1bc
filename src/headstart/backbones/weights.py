"""Bringing weights into a zoo architecture: local files, local directories, and URLs.

Checkpoints are read without pickle execution (safetensors, or torch.load(weights_only=True)).
A checkpoint that does not fit raises WeightsMismatchError listing the missing, unexpected and
mis-shaped tensors. The URL path (http(s)://, file://, hf://owner/repo) downloads once into the
cache folder, verified (size cap, checksum, see download.py); it is the code online users run,
and the tests drive it with a local HTTP server, file:// URLs and a stand-in hub.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..cache import cache_dir
from ..exceptions import WeightsError, WeightsMismatchError
from ..safeio import guarded
from .download import download
from .run_files import check_weights_file

__all__ = ["cache_dir", "read_checkpoint", "resolve", "download", "load_weights",
           "load_state_dict_checked"]

_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; check the path given to --weights")
    fix = "pass a .safetensors or a torch state_dict file"
    with guarded(path, "not a readable checkpoint: the file", fix, WeightsError):
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:  # weights_only: tensors and plain containers, never a pickle's code
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise WeightsError(f"{path}: holds no state_dict of tensors; save one with "
                           "torch.save(model.state_dict(), path) or safetensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def resolve(spec: str | os.PathLike) -> Path:
    """A local weights file for a file path, a directory, or a URL."""
    text = str(spec)
    if text.startswith(("http://", "https://", "file://", "hf://")):
        return download(text)
    path = Path(text).expanduser()
    if path.is_dir():
        found = [path / n for n in _FILE_NAMES if (path / n).is_file()]
        if not found:
            found = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        if len(found) != 1:
            what = "no weights file" if not found else f"{len(found)} weights files"
            raise WeightsError(f"{path}: {what} found; expected one of {', '.join(_FILE_NAMES)} "
                               "(or pass the file itself)")
        return found[0]
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file or folder; check --weights")
    return path


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], *, source: str,
                            arch: str, optional: tuple[str, ...] = ()) -> list[str]:
    """Load `state` into `module` or raise a full report. Keys starting with any `optional`
    prefix may be missing or mis-shaped (they are left as they are); returns those left."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and state[k].shape != own[k].shape]
    is_opt = lambda k: k.startswith(optional) if optional else False  # noqa: E731
    left = [k for k in missing if is_opt(k)] + [k for k, _, _ in mismatched if is_opt(k)]
    missing = [k for k in missing if not is_opt(k)]
    mismatched = [m for m in mismatched if not is_opt(m[0])]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(source, arch, missing, unexpected, mismatched)
    module.load_state_dict({k: v for k, v in state.items() if k not in left}, strict=False)
    return left


def load_weights(backbone, spec: str | os.PathLike) -> list[str]:
    """Load user weights into a backbone. Accepts the backbone's own keys, the original
    network's keys (no 'net.' prefix), or a headstart run's model ('backbone.' prefix, head
    dropped). The source classifier is optional: a checkpoint without it (or with another
    class count) loads, and `predict` without a run then says it has no source labels."""
    path = resolve(spec)
    check_weights_file(path, backbone.config.name)
    state = read_checkpoint(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    prefixes = sorted({k.split(".", 1)[0] + "." for k in own if "." in k})
    if len(prefixes) == 1 and not any(k.startswith(prefixes[0]) for k in state):
        state = {prefixes[0] + k: v for k, v in state.items()}
    classifier = backbone.source_classifier()
    optional = tuple(n + "." for n, m in backbone.named_modules() if m is classifier and n)
    left = load_state_dict_checked(backbone, state, source=str(path), arch=backbone.config.name,
                                   optional=optional)
    backbone.source_classifier_loaded = not left
    return left
