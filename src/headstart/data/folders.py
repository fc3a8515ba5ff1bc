"""Walking a folder of class sub-folders: the one set of rules both images and texts follow.

Nothing is dropped without a word. What is read: every non-hidden sub-folder of the root is a
class; every file below it, in sub-folders too, symlinked sub-folders included, is an example.
What is not read, and reported by name with a count (`LabelledData.ignored`): hidden folders
(a name starting with '.', e.g. `.git`, `.ipynb_checkpoints`), files in the root next to the
class folders, links that lead back to a folder already read (symlink loops, or a link to
another class), and special files (pipes, devices). Hidden and system files (`.DS_Store`,
`Thumbs.db`) are counted. So the counts printed always add up to what the folder holds.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

from ..exceptions import DataError
from .images import is_system_file

COUNT_CAP = 10_000  # files counted in an ignored hidden folder before "10,000+"
# names of split folders: a root whose only "classes" are these, each holding sub-folders, is
# the parent of a train/test split (what `headstart make-dataset` writes), not a dataset
TRAIN_NAMES = ("train", "training")
SPLIT_NAMES = (*TRAIN_NAMES, "test", "testing", "val", "valid", "validation", "dev")


def _stat(p: Path) -> os.stat_result | None:
    """stat following links; None for a dangling link or an unreachable entry."""
    try:
        return p.stat()
    except (OSError, ValueError):
        return None


def is_folder(p) -> bool:
    """A folder (links followed); False for anything odd, never an exception."""
    st = _stat(Path(p))
    return st is not None and stat.S_ISDIR(st.st_mode)


def _list(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e}); check its "
                        "permissions") from None


def count_files(folder: Path) -> str:
    n = 0
    for _, _, files in os.walk(folder):
        n += len(files)
        if n >= COUNT_CAP:
            return f"{COUNT_CAP:,}+"
    return str(n)


def _hidden_folder(p: Path) -> str:
    return (f"{p}{os.sep} (hidden folder, {count_files(p)} file(s); rename it without the "
            "leading '.' to read it)")


def scan_root(root: Path, ds) -> list[Path]:
    """The class folders of `root`; what else it holds goes to ds.ignored and
    ds.ignored_system_files. The parent of a train/test split is refused."""
    class_dirs = []
    for p in _list(root):
        st = _stat(p)
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        if is_dir and p.name.startswith("."):
            ds.ignored.append(_hidden_folder(p))
        elif is_dir:
            class_dirs.append(p)
        elif is_system_file(p):
            ds.ignored_system_files += 1
        else:
            ds.ignored.append(f"{p} (a file in the data root, outside any class folder)")
    _check_not_split_root(root, class_dirs)
    return class_dirs


class SplitRootError(DataError):
    """The data is the parent of a train/test split: an error whatever reads the folder."""


def _check_not_split_root(root: Path, class_dirs: list[Path]) -> None:
    """Refuse a split's parent folder: read as a dataset its classes would be 'train' and
    'test', and a classifier would learn which split a file came from."""
    names = [d.name.lower() for d in class_dirs]
    if (len(names) < 2 or not set(names) <= set(SPLIT_NAMES)
            or not set(TRAIN_NAMES) & set(names)):
        return
    if not all(any(is_folder(q) and not q.name.startswith(".") for q in _list(d))
               for d in class_dirs):
        return  # class folders that happen to be called train/test hold the examples
    train = next(d for d in class_dirs if d.name.lower() in TRAIN_NAMES)
    others = [d for d in class_dirs if d is not train]
    splits = ", ".join(d.name for d in class_dirs)
    raise SplitRootError(f"{root}: holds the split folders {splits}, each of class sub-folders, "
                         f"not classes; pass {train} as the data and keep {others[0]} to test "
                         "the trained run on")


def class_files(class_dirs: list[Path], ds):
    """(class folder, file) for every file under the class folders, in sorted order, symlinked
    sub-folders followed; what is not read is recorded on ds (see the module's rules)."""
    seen = {(st.st_dev, st.st_ino) for st in map(_stat, class_dirs) if st is not None}
    for d in class_dirs:
        for p in _walk(d, ds, seen):
            yield d, p


def _walk(folder: Path, ds, seen: set):
    for p in _list(folder):
        st = _stat(p)
        if st is not None and stat.S_ISDIR(st.st_mode):
            if p.name.startswith("."):
                ds.ignored.append(_hidden_folder(p))
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                ds.ignored.append(f"{p} (a link to a folder that is read already: not read "
                                  "twice)")
                continue
            seen.add(key)
            yield from _walk(p, ds, seen)
        elif is_system_file(p):
            ds.ignored_system_files += 1
        elif st is not None and not stat.S_ISREG(st.st_mode):
            ds.ignored.append(f"{p} (not a regular file: a pipe, socket or device)")
        else:
            yield p  # a file, or a dangling link (reported when read)


def inputs_under(folder, wanted, what: str, none: str) -> list[Path]:
    """The files under a folder given to predict that `wanted(path)` accepts, sorted (sub-
    folders too, by the rules above); what else the folder holds is said on stderr, by name,
    never skipped silently. None accepted: a DataError `{folder}: {none}`."""
    sink = SimpleNamespace(ignored=[], ignored_system_files=0)
    st = _stat(Path(folder))
    files = list(_walk(Path(folder), sink, {(st.st_dev, st.st_ino)} if st is not None else set()))
    kept = [p for p in files if wanted(p)]
    if not kept:
        raise DataError(f"{folder}: {none}")
    others = [str(p) for p in files if not wanted(p)] + sink.ignored
    said = []
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        said.append(f"{len(others)} other entr{'y' if len(others) == 1 else 'ies'} ({shown})")
    if sink.ignored_system_files:
        said.append(f"{sink.ignored_system_files} hidden or system file(s)")
    if said:
        print(f"{folder}: {len(kept)} {what} to predict; not read: " + "; ".join(said),
              file=sys.stderr)
    return kept


def first_files(root: Path, limit: int = 50) -> list[Path]:
    """Up to `limit` example files of a class folder tree (for guessing the modality)."""
    sink = SimpleNamespace(ignored=[], ignored_system_files=0)
    out = []
    try:
        for _, p in class_files(scan_root(root, sink), sink):
            out.append(p)
            if len(out) >= limit:
                break
    except SplitRootError:
        raise
    except DataError:
        pass
    return out
