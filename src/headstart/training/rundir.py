"""The run directory: written into a hidden sibling by one locked writer, renamed into place
when complete.

    runs/cats/            config.yaml labels.json model.safetensors metrics.json history.csv
                          (and trained_on.json: the training examples' content hashes)
    runs/.cats.partial/   the same while training, plus checkpoint.pt for resuming
    runs/.cats.lock       held by the process writing the run (its PID and host inside)

`--overwrite` replaces only a previous headstart run (recognised by its files), never a file
or a folder holding anything else. Every file read back goes through the guarded readers of
`headstart.safeio`: damage is a one-line error naming the file and the fix.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from ..exceptions import HeadstartError, RunDirError
from ..safeio import read_json, read_safetensors, read_torch, read_yaml, unique_tmp
from . import distributed as dist
from .config import TrainConfig, upgrade
from .lock import RunLock, holder_of

CHECKPOINT = "checkpoint.pt"
RUN_FILES = ("config.yaml", "labels.json", "model.safetensors", "metrics.json", "history.csv")
# what a checkpoint of the trainer holds at the least (anything else is not one of ours)
CHECKPOINT_KEYS = {"model": dict, "history": list, "phase": int, "epoch": int}
RESTART = "pass --restart to discard the interrupted run and start again"
# config.yaml keys that say how the job ran (under torchrun: its processes, the batch each
# took, the learning-rate rule), written at the end; a resume does not compare them
JOB_KEYS = ("distributed",)


def run_kind(path: Path) -> str | None:
    """'run' for a previous headstart run, 'report' for a `compare` report, 'empty' for an
    empty folder, else None (a file, or a folder holding anything else)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return None
    has = lambda name: (path / name).is_file()  # noqa: E731
    if has("config.yaml") and has("labels.json") and (has("model.safetensors")
                                                      or has("metrics.json")):
        return "run"
    if has("report.json"):
        return "report"
    return "empty" if not any(path.iterdir()) else None


def check_replaceable(out: Path, *, overwrite: bool, kinds=("run", "report", "empty")) -> None:
    """Refuse an --out that exists, unless it is a previous headstart output (or an empty
    folder) and --overwrite was given."""
    if not os.path.lexists(out):
        return
    kind = run_kind(out)
    if kind in kinds:
        if not overwrite:
            raise RunDirError(f"{out} already exists; choose another --out, or pass "
                              "--overwrite to replace it")
        return
    what = ("is a file" if out.is_file() else "is a link" if out.is_symlink()
            else "is a folder that is not a headstart run" if out.is_dir() else "exists")
    shown = _few_entries(out) if out.is_dir() and not out.is_symlink() else ""
    raise RunDirError(f"{out} {what}{shown}; --out must name a new folder (or a previous run, "
                      "with --overwrite, which replaces only headstart runs): choose another --out")


def _few_entries(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    more = f", ... {len(names) - 3} more" if len(names) > 3 else ""
    return f" (holding {', '.join(names[:3])}{more})"


def check_out_apart(out: Path, data) -> None:
    """The run and the data must not contain each other: writing a run inside the data
    folder adds a class to it, and replacing a run that holds the data deletes the data."""
    if not isinstance(data, (str, os.PathLike)):
        return
    o, d = Path(out).resolve(), Path(data).resolve()
    if o == d or d in o.parents:
        where = "is the data itself" if o == d else f"is inside the data {data}"
        raise RunDirError(f"--out {out} {where}; write runs outside the data folder, e.g. "
                          "--out runs/NAME")
    if o in d.parents:
        raise RunDirError(f"the data {data} is inside --out {out}; choose an --out that does "
                          "not hold the data")


def open_writer(out, data, *, overwrite: bool, log=print) -> "RunWriter":
    """The writer of run `out` (which may not contain the data, nor lie in it), locked."""
    check_out_apart(Path(out), data)
    writer = RunWriter(out, overwrite=overwrite)
    if writer.stale:
        log(f"taking over {writer.lock.path}: process {writer.stale.get('pid')} that held it "
            "is no longer running")
    return writer


@contextlib.contextmanager
def run_writer(out, data, *, overwrite: bool, log=print):
    """The locked writer of run `out` while the block runs (None without `out`, and in every
    process of a torchrun job but rank 0), its lock given back however the block ends."""
    dist.init_from_env()  # under torchrun only rank 0 writes
    writer = open_writer(out, data, overwrite=overwrite, log=log) \
        if out is not None and dist.is_main() else None
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


class RunWriter:
    """The one process writing a run: checks --out, takes the lock, prepares the partial
    directory, writes files atomically and commits. Use as a context manager, or call
    close() (commit() does) so the lock is given back."""

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        self.partial = self.out.parent / f".{self.out.name}.partial"
        if len(os.fsencode(self.partial.name)) > 255:
            raise RunDirError(f"--out {self.out.name[:60]}...: the name is too long for this "
                              "file system (the run's hidden partial folder adds 10 characters); "
                              "choose a shorter --out")
        check_replaceable(self.out, overwrite=overwrite)
        self.lock = RunLock(self.out)
        self.stale = self.lock.acquire()  # the holder of a lock left by a killed process
        try:  # under the lock: nothing may have appeared meanwhile
            check_replaceable(self.out, overwrite=overwrite)
        except RunDirError:
            self.close()
            raise

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Give the lock back (the partial directory stays, to resume)."""
        self.lock.release()

    def open(self, config: dict, *, restart: bool = False) -> dict | None:
        """Prepare the partial directory; return the checkpoint to resume from, if any."""
        if os.path.lexists(self.partial) and not (self.partial.is_dir()
                                                  and not self.partial.is_symlink()):
            raise RunDirError(f"{self.partial} is in the way (not a folder headstart wrote); "
                              "move or remove it")
        if self.partial.is_dir() and not restart and (self.partial / "config.yaml").exists():
            old = read_yaml(self.partial / "config.yaml", what="the interrupted run's settings",
                            fix=RESTART, error=RunDirError, expect=dict)
            # what the job looked like (torchrun's world) is recorded, not a setting: a job
            # restarted with another number of processes resumes the same run
            old = {k: v for k, v in upgrade(old).items() if k not in JOB_KEYS}
            if old == config and (self.partial / CHECKPOINT).is_file():
                return self.load_checkpoint(CHECKPOINT)
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise RunDirError(f"{self.partial} holds an interrupted run with other settings "
                                  f"({', '.join(map(str, diff))}); re-run with the same settings "
                                  "to resume, or pass --restart to discard it")
        self._discard_partial()
        self.partial.mkdir(parents=True)
        self.write_yaml("config.yaml", config)
        return None

    def _discard_partial(self) -> None:
        if not self.partial.is_dir():
            return
        theirs = [p.name for p in self.partial.iterdir() if not _ours(p.name)]
        if theirs:
            raise RunDirError(f"{self.partial} holds files headstart did not write "
                              f"({', '.join(sorted(theirs)[:3])}); move them away first")
        shutil.rmtree(self.partial)

    def write_yaml(self, name: str, data: dict) -> None:
        _atomic_text(self.partial / name, yaml.safe_dump(data, sort_keys=False))

    def record_job(self, job: dict) -> None:
        """Add what the job was (JOB_KEYS) to the run's config.yaml before the commit."""
        config = read_yaml(self.partial / "config.yaml", what="the run's settings",
                           fix=RESTART, error=RunDirError, expect=dict)
        self.write_yaml("config.yaml", {**config, **job})

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
        """A trainer checkpoint saved under `name` in this run's partial directory, if any
        (open() checks first that the interrupted run had the same settings)."""
        path = self.partial / name
        if not path.is_file():
            return None
        state = read_torch(path, what="the interrupted run's checkpoint", fix=RESTART,
                           error=RunDirError)
        bad = [k for k, t in CHECKPOINT_KEYS.items()
               if not isinstance(state, dict) or not isinstance(state.get(k), t)]
        if bad:
            raise RunDirError(f"{path}: not a headstart checkpoint (no {', '.join(bad)}); "
                              f"{RESTART}")
        return state

    def commit(self, *, overwrite: bool = False) -> Path:
        for ckpt in self.partial.glob("*checkpoint.pt"):
            ckpt.unlink()
        missing = [f for f in RUN_FILES if not (self.partial / f).is_file()]
        if missing:
            raise RunDirError(f"{self.partial}: run incomplete, missing {', '.join(missing)}")
        check_replaceable(self.out, overwrite=overwrite or self.overwrite)
        if os.path.lexists(self.out):  # a previous run (or an empty folder), checked above
            trash = unique_tmp(self.out).with_suffix(".old")
            self.out.rename(trash)
            try:
                self.partial.rename(self.out)
            except OSError:
                trash.rename(self.out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.partial.rename(self.out)
        self.close()
        return self.out


# written beside RUN_FILES where there is something to write, and optional to read
TRAINED_ON = "trained_on.json"
_OURS = {*RUN_FILES, TRAINED_ON, "history.png", "source.json", "source_sample", "history.tmp"}


def _ours(name: str) -> bool:
    return name in _OURS or name.endswith((".tmp", "checkpoint.pt"))


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


READ_FIX = "the run is damaged: train it again (headstart train ... --out RUN --overwrite)"


def read_run(path: str | os.PathLike) -> tuple[dict, list, dict[str, torch.Tensor], dict]:
    """(config, labels, model state, metrics) of a finished run, or a clear error."""
    run = Path(path)
    if not run.is_dir():
        raise RunDirError(_no_run(run))
    missing = [f for f in RUN_FILES if not (run / f).is_file()]
    if missing:
        raise RunDirError(f"{run}: not a complete headstart run (missing {', '.join(missing)})")
    kw = dict(fix=READ_FIX, error=RunDirError)
    config = read_yaml(run / "config.yaml", what="the run's settings", expect=dict, **kw)
    labels = read_json(run / "labels.json", what="the run's class list", expect=list, **kw)
    if not labels or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                             for x in labels) or len({str(x) for x in labels}) != len(labels):
        raise RunDirError(f"{run / 'labels.json'}: expected a list of distinct class names; "
                          f"{READ_FIX}")
    metrics = read_json(run / "metrics.json", what="the run's metrics", expect=dict, **kw)
    state = read_safetensors(run / "model.safetensors", what="the run's model", **kw)
    return config, labels, state, metrics


def read_trained_on(path: str | os.PathLike) -> list[str] | None:
    """The content hashes of a run's training examples (TRAINED_ON), or None for a run that
    has none (older runs); a damaged file is an error naming it."""
    file = Path(path) / TRAINED_ON
    if not file.is_file():
        return None
    hashes = read_json(file, what="the hashes of the run's training examples", expect=list,
                       fix=READ_FIX, error=RunDirError)
    if not all(isinstance(h, str) for h in hashes):
        raise RunDirError(f"{file}: expected a list of content hashes; {READ_FIX}")
    return hashes


def run_config(run, stored: dict):
    """The TrainConfig of a finished run's config.yaml, or an error naming it."""
    try:
        cfg = TrainConfig.from_dict(stored).validate()
        if not isinstance(cfg.backbone, str) or not isinstance(cfg.input_size, int):
            raise ValueError("no backbone or image size recorded")
    except (HeadstartError, TypeError, ValueError) as e:
        raise RunDirError(f"{Path(run) / 'config.yaml'}: settings headstart cannot use ({e}); "
                          f"{READ_FIX}") from None
    if os.sep in cfg.backbone and not Path(cfg.backbone).is_dir():
        raise RunDirError(f"{run}: trained from the model folder {cfg.backbone}, which is no "
                          "longer there; put it back (it holds the architecture's description)")
    return cfg


def load_run_state(run, model: torch.nn.Module, state: dict) -> None:
    """Load a run's model.safetensors into the model its config.yaml and labels.json build."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise RunDirError(f"{Path(run) / 'model.safetensors'}: does not fit the run's "
                          f"config.yaml and labels.json ({detail}); {READ_FIX}") from None


def _no_run(run: Path) -> str:
    if run.exists():
        return f"{run} is a file, not a run directory; pass the folder `headstart train` wrote"
    partial = run.parent / f".{run.name}.partial"
    holder = holder_of(run)
    if holder is not None:
        return (f"{run}: no such run directory yet; it is being written by process "
                f"{holder.get('pid')}; wait for it to finish")
    hint = (" An interrupted run is in " + str(partial) + "; re-run `headstart train` with the "
            "same settings to finish it.") if partial.exists() else ""
    return (f"{run}: no such run directory; train one with `headstart train DATA --out {run}`."
            + hint)


def shared_tensors(*states: dict | None) -> list[dict | None]:
    """The state dicts with every tensor equal to one at the same key in an earlier dict
    replaced by that tensor, so that a checkpoint stores it once (torch.save writes a shared
    tensor once, and loads it shared). The current, best, start and best-tuned weights of a run
    are mostly the same tensors: the frozen groups always, and often all of them. Never changed
    in place once saved, so sharing on load is safe."""
    kept: dict[str, list[torch.Tensor]] = {}
    out = []
    for state in states:
        if state is None:
            out.append(None)
            continue
        d = {}
        for k, t in state.items():
            same = kept.setdefault(k, [])
            d[k] = next((u for u in same if u.dtype == t.dtype and u.shape == t.shape
                         and u.device == t.device and torch.equal(u, t)), t)
            if d[k] is t:
                same.append(t)
        out.append(d)
    return out
