"""Pre-train your own source model when no public one fits ("apples first, then pears"):
train a zoo architecture from scratch on an abundant, related labelled dataset and keep it as a
source model that `train`, `rank` and `compare` accept with `--backbone DIR`.

The source model is a run directory (resume, progress, early stopping and atomic writing as for
`train`) plus `source.json` (architecture, input, the data it saw, held-out accuracy) and
`source_sample/` (up to `sample_size` held-out source examples, class sub-folders), so later
fine-tuning runs can measure how much of the source task they retain.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from . import api, modalities
from .backbones import get_config
from .backbones.run_files import SOURCE_META, SOURCE_SAMPLE
from .exceptions import ConfigError
from .safeio import safe_join
from .training.config import TrainConfig
from .training.model import TrainedModel
from .training.pipeline import fit_run
from .training.rundir import run_writer


def pretrain(data, out, *, arch: str, labels=None, config: TrainConfig | None = None,
             sample_size: int = 500, overwrite: bool = False, restart: bool = False,
             progress: bool = True, log=print) -> TrainedModel:
    """Train `arch` from random initialisation on `data` and save it as a source model."""
    # refit="none": the held-out part is the source's test (and its retention sample), so the
    # source model must never learn from it
    cfg = replace(config or TrainConfig(), backbone=arch, strategy="scratch", refit="none")
    if sample_size < 0:
        raise ConfigError(f"sample_size must be 0 or more, got {sample_size}")
    if cfg.val_fraction <= 0:
        raise ConfigError("pretrain needs a held-out part to report the source accuracy; pass "
                          "a --val-fraction above 0 (default 0.2)")
    get_config(arch)  # an unknown architecture fails before any data is read

    with run_writer(out, data, overwrite=overwrite, log=log) as writer:
        result, val_split = fit_run(data, writer, labels=labels, config=cfg, restart=restart,
                                    progress=progress, log=log)
        if writer is not None:
            _write_source(writer, result, val_split, arch=arch, data=data,
                          sample_size=sample_size)
            result.run_dir = api.save_run(result, writer, overwrite=overwrite)
    return result


def _write_source(writer, result: TrainedModel, val_split, *, arch: str, data,
                  sample_size: int) -> None:
    """source.json and source_sample/: what the source model saw, and held-out examples."""
    sample, folders = _write_sample(writer.partial / SOURCE_SAMPLE, val_split, result.classes,
                                    sample_size)
    m = result.metrics
    writer.write_json(SOURCE_META, {
        "arch": arch, "modality": get_config(arch).modality,
        "input_size": result.config.input_size, "classes": result.classes,
        "data": str(m.get("data", data)), "examples": m["train_examples"] + m["val_examples"],
        "held_out_accuracy": m["val_accuracy"],
        "held_out": "the validation split: never trained on, used for early stopping",
        "source_sample": sample, "source_sample_folders": folders})


def _write_sample(folder: Path, split, classes: list[str], limit: int
                  ) -> tuple[int, dict[str, str]]:
    """Copy up to `limit` held-out examples, stratified, as <class>/<n>.<ext> files. Class
    folders get safe names (a label such as '../x' or '/etc' never leaves the sample folder);
    returns the count and {folder name: label} for the folders whose name is not the label."""
    if not limit or not len(split.y):
        return 0, {}
    rng = np.random.default_rng(0)
    order = rng.permutation(len(split.y))[:limit]
    folders: dict[str, str] = {}
    for n, i in enumerate(sorted(order.tolist())):
        label = classes[int(split.y[i])]
        src = split.ds.sources[i]
        d = safe_join(folder, label)
        if d.name != label:
            folders[d.name] = label
        d.mkdir(parents=True, exist_ok=True)
        modalities.of(split.ds).write_example(src, d, n)
    return len(order), folders
