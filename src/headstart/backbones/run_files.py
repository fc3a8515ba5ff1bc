"""A finished headstart run read as a model source: which files make one, what its settings,
labels and source description say, and whether a weights file comes from one."""
from __future__ import annotations

from pathlib import Path

import torch

from ..exceptions import SourceMismatchError, WeightsError
from ..safeio import read_json, read_safetensors, read_yaml

SOURCE_META = "source.json"
SOURCE_SAMPLE = "source_sample"
_FIX = "re-run `headstart pretrain` (or `train`) to write it again"


def is_run_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.yaml", "labels.json", "model.safetensors"))


def read_meta(path: Path) -> tuple[dict, list, dict]:
    """(stored config, labels, source.json or {}) of a run directory."""
    kw = dict(fix=_FIX, error=WeightsError)
    stored = read_yaml(path / "config.yaml", what="the source model's settings", expect=dict,
                       **kw)
    labels = read_json(path / "labels.json", what="the source model's class list", expect=list,
                       **kw)
    meta = read_json(path / SOURCE_META, what="the source model's description", expect=dict,
                     **kw) if (path / SOURCE_META).is_file() else {}
    return stored, labels, meta


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The run's model.safetensors (backbone and head)."""
    return read_safetensors(path / "model.safetensors", what="the source model's weights",
                            fix=_FIX, error=WeightsError)


def check_weights_file(path: Path, arch: str) -> None:
    """`--weights RUN_DIR/model.safetensors` from another architecture: say so plainly, before
    the tensor-by-tensor report."""
    run = path.parent
    if not is_run_dir(run):
        return
    stored, _, _ = read_meta(run)
    have = str(stored.get("backbone", "?"))
    if have != arch:
        raise SourceMismatchError(str(run), [("architecture", have, arch)],
                                  f"Use --backbone {run} to transfer from it (its own "
                                  "architecture and input size are used)")
