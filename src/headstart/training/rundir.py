"""The run directory: written into a hidden sibling, renamed into place when complete.

    runs/cats/            config.yaml labels.json model.safetensors metrics.json history.csv
    runs/.cats.partial/   the same while training, plus checkpoint.pt for resuming
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..exceptions import RunDirError
from .config import upgrade

CHECKPOINT = "checkpoint.pt"
RUN_FILES = ("config.yaml", "labels.json", "model.safetensors", "metrics.json", "history.csv")


class RunWriter:
    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.partial = self.out.parent / f".{self.out.name}.partial"
        if self.out.exists() and not overwrite:
            raise RunDirError(f"{self.out} already exists; choose another --out, or pass "
                              "--overwrite to replace it")

    def open(self, config: dict, *, restart: bool = False) -> dict | None:
        """Prepare the partial directory; return the checkpoint to resume from, if any."""
        ckpt = self.partial / CHECKPOINT
        if self.partial.exists() and not restart:
            old = self._read_yaml(self.partial / "config.yaml")
            old = upgrade(old) if isinstance(old, dict) else old
            if old == config and ckpt.is_file():
                return self.load_checkpoint(CHECKPOINT)
            if old is not None and old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise RunDirError(f"{self.partial} holds an interrupted run with other settings "
                                  f"({', '.join(diff)}); re-run with the same settings to resume, "
                                  "or pass --restart to discard it")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.write_yaml("config.yaml", config)
        return None

    @staticmethod
    def _read_yaml(path: Path) -> dict | None:
        try:
            return yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return None

    def write_yaml(self, name: str, data: dict) -> None:
        _atomic_text(self.partial / name, yaml.safe_dump(data, sort_keys=False))

    def write_json(self, name: str, data) -> None:
        _atomic_text(self.partial / name, json.dumps(data, indent=2) + "\n")

    def write_history(self, rows: list[dict]) -> None:
        write_csv(self.partial / "history.csv", rows)

    def write_model(self, state: dict[str, torch.Tensor]) -> None:
        tmp = self.partial / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(self.partial / "model.safetensors")

    def save_checkpoint(self, state: dict, name: str = CHECKPOINT) -> None:
        tmp = self.partial / (name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.partial / name)

    def load_checkpoint(self, name: str) -> dict | None:
        """A checkpoint saved under `name` in this run's partial directory, if any (open()
        checks first that the interrupted run had the same settings)."""
        path = self.partial / name
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def commit(self, *, overwrite: bool = False) -> Path:
        for ckpt in self.partial.glob("*checkpoint.pt"):
            ckpt.unlink()
        missing = [f for f in RUN_FILES if not (self.partial / f).is_file()]
        if missing:
            raise RunDirError(f"{self.partial}: run incomplete, missing {', '.join(missing)}")
        if self.out.exists() and overwrite:
            trash = self.out.parent / f".{self.out.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            self.out.rename(trash)
            self.partial.rename(self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.partial.rename(self.out)
        return self.out


def write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_run(path: str | os.PathLike) -> tuple[dict, list[str], dict[str, torch.Tensor], dict]:
    """(config, labels, model state, metrics) of a finished run, or a clear error."""
    run = Path(path)
    if not run.is_dir():
        partial = run.parent / f".{run.name}.partial"
        hint = (" An interrupted run is in " + str(partial) + "; re-run `headstart train` with the "
                "same settings to finish it.") if partial.exists() else ""
        raise RunDirError(f"{run}: no such run directory; train one with `headstart train DATA "
                          f"--out {run}`.{hint}")
    missing = [f for f in RUN_FILES if not (run / f).is_file()]
    if missing:
        raise RunDirError(f"{run}: not a complete headstart run (missing {', '.join(missing)})")
    config = yaml.safe_load((run / "config.yaml").read_text())
    labels = json.loads((run / "labels.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return config, labels, load_file(str(run / "model.safetensors")), metrics
