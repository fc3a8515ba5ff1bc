"""Labelled data (LabelledData: sources and labels, split and validated the same for every
modality) and image collections: from a folder of class sub-folders, a CSV of path,label, or
memory.

A dataset here is a light list of sources (paths or in-memory images) and labels. Pixels are
read only when a batch needs them, so a dataset of any size costs a few bytes per image.
"""
from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..exceptions import DataError
from .folders import class_files, is_folder, scan_root
from .images import IMAGE_EXTENSIONS, ImageSource, describe, is_image_path, is_regular_file

# column names of tables: the image path (or text, see texts.py) and the label
PATH_COLUMNS = ("path", "file", "image", "filename", "filepath", "file_path", "image_path",
                "img")
LABEL_COLUMNS = ("label", "labels", "category", "class", "topic", "target", "y")


@dataclass
class LabelledData:
    """Sources (image files or arrays, or texts) and their labels; `modality` names the kind
    (modalities/ has the object that knows it), `unit` what a count of them is called."""
    sources: list
    labels: list[str]
    root: str = "<memory>"
    skipped: list[str] = field(default_factory=list)  # "file: reason" for every skipped input
    ignored_system_files: int = 0
    ignored: list[str] = field(default_factory=list)  # "path (why)": in the data, not read
    modality = ""
    unit = "examples"
    looked_for = ""  # what an empty dataset's error says was looked for

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        c = Counter(self.labels)
        return {k: c[k] for k in self.classes}

    def subset(self, indices: Sequence[int]) -> "LabelledData":
        return type(self)([self.sources[i] for i in indices], [self.labels[i] for i in indices],
                          root=self.root)

    def joined(self, other: "LabelledData") -> "LabelledData":
        """This data followed by other's (e.g. the training split and the validation split)."""
        return type(self)(self.sources + other.sources, self.labels + other.labels,
                          root=self.root)

    def describe_sources(self) -> list[str]:
        return [describe(s) for s in self.sources]

    def ignored_notes(self, limit: int = 10) -> list[str]:
        """What the data holds that was not read, by name and with a count (never silent)."""
        notes = []
        if self.ignored_system_files:
            notes.append(f"(ignored {self.ignored_system_files} hidden or system file(s))")
        if self.ignored:
            notes.append(f"not read: {len(self.ignored)} item(s) outside the class folders' "
                         "examples:")
            notes += [f"  {x}" for x in self.ignored[:limit]]
            if len(self.ignored) > limit:
                notes.append(f"  ... and {len(self.ignored) - limit} more")
        return notes


@dataclass
class ImageDataset(LabelledData):
    sources: list[ImageSource]
    modality = "image"
    unit = "images"
    looked_for = f" (looked for {', '.join(IMAGE_EXTENSIONS)})"


def load_images(data, labels=None, *, skip_bad: bool = False) -> LabelledData:
    """Images and labels from a folder of class sub-folders, a CSV/TSV of path,label rows, or
    images (paths, arrays, PIL images) with labels (validated by `validate`)."""
    if isinstance(data, LabelledData):
        return data
    if labels is not None:
        return from_memory(data, labels)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not os.path.lexists(path):
            raise DataError(f"{path}: no such file or folder; pass a folder of class sub-folders "
                            "or a CSV file of path,label rows")
        if is_folder(path):
            return from_folder(path, skip_bad=skip_bad)
        if path.suffix.lower() in (".csv", ".tsv") and is_regular_file(path):
            return from_csv(path, skip_bad=skip_bad)
        if path.suffix.lower() in SPREADSHEETS:
            raise DataError(f"{path}: a spreadsheet, which headstart does not read; save it as a "
                            ".csv file (in Excel: File > Save As > CSV UTF-8) with a header naming "
                            "the columns (text,label for texts; path,label for image files)")
        raise DataError(f"{path}: expected a folder of class sub-folders or a .csv of path,label "
                        f"rows, got a '{path.suffix or 'no-extension'}' file")
    raise DataError(f"cannot read a dataset from {type(data).__name__}; pass a folder path, a CSV "
                    "path, or images together with labels")


def from_folder(root: Path, *, skip_bad: bool = False) -> ImageDataset:
    root = Path(root)
    ds = ImageDataset([], [], root=str(root))
    class_dirs = scan_root(root, ds)
    if not class_dirs:
        loose = [p for p in root.iterdir() if is_image_path(p) and is_regular_file(p)]
        hint = (f" It holds {len(loose)} loose images: move them into one sub-folder per class."
                if loose else "")
        raise DataError(f"{root}: no class sub-folders found; expected {root}/<class>/<image>."
                        + hint)
    for d, p in class_files(class_dirs, ds):
        if is_image_path(p):
            ds.sources.append(str(p))
            ds.labels.append(d.name)
        elif skip_bad:
            ds.skipped.append(f"{p}: not an image file (extension '{p.suffix}')")
        else:
            raise DataError(f"{p}: not an image file (expected one of "
                            f"{', '.join(IMAGE_EXTENSIONS)}); remove it or pass --skip-bad")
    empty = [d.name for d in class_dirs if d.name not in set(ds.labels)]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty)} hold no images; add images "
                        "or remove the folder(s)")
    return ds


def from_csv(path: Path, *, skip_bad: bool = False) -> ImageDataset:
    """Images and labels from a CSV/TSV of path,label rows (a header naming the columns, in
    any order, or none: then the first two columns)."""
    path = Path(path)
    ds = ImageDataset([], [], root=str(path))
    rows = read_table_rows(path)
    start, (pcol, lcol) = _image_columns(path, rows)
    for n, row in enumerate(rows[start:], start=1):  # row N: the N-th after any header
        if not row or all(not c.strip() for c in row):
            continue
        cells = [row[i].strip() if i < len(row) else "" for i in (pcol, lcol)]
        if not all(cells):
            raise DataError(f"{path}, row {n}: expected 'path,label', got {row!r}; fix the row")
        file = Path(cells[0])
        if not file.is_absolute():
            file = path.parent / file
        if not is_regular_file(file):
            problem = (f"{path}, row {n}: label '{cells[1]}' names {_short(file)}, which does not "
                       "exist or is not a file")
            if skip_bad:
                ds.skipped.append(problem)
                continue
            raise DataError(problem + "; fix the path (relative paths start at the CSV's folder) "
                            "or pass --skip-bad")
        ds.sources.append(str(file))
        ds.labels.append(cells[1])
    return ds


DELIMITERS = (",", ";", "\t", "|")


SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")


def csv_delimiter(text: str, path: Path) -> str:
    """A tab for a .tsv; otherwise whichever of , ; tab | the first line holds most often
    outside quotes (a comma where it holds none, or on a tie), so that a spreadsheet saved with
    semicolons, as Excel does in locales whose decimal mark is a comma, reads as it opens."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    bare = "".join(first.split('"')[::2])  # the parts outside double quotes
    counts = {d: bare.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def read_table_rows(path: Path) -> list[list[str]]:
    """The rows of a CSV/TSV of image paths (UTF-8, a BOM allowed), or a DataError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
        if "\x00" in text:
            line = text[:text.index("\x00")].count("\n") + 1
            raise DataError(f"{path}, line {line}: holds a NUL character, so it is not CSV text; "
                            "save it as plain UTF-8 CSV")
        return list(csv.reader(io.StringIO(text, newline=""),
                               delimiter=csv_delimiter(text, path)))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start}); save it as UTF-8 text") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the CSV ({e.strerror or e}); check that the file "
                        "is readable") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e}); save it as plain CSV text") from None


def _image_columns(path: Path, rows: list[list[str]]) -> tuple[int, tuple[int, int]]:
    """(first data row, (path column, label column)): from a header naming them, else 0, 1."""
    if not rows:
        return 0, (0, 1)
    names = [c.strip().lower() for c in rows[0]]
    pcol = next((i for i, c in enumerate(names) if c in PATH_COLUMNS), None)
    lcol = next((i for i, c in enumerate(names) if c in LABEL_COLUMNS), None)
    if pcol is not None and lcol is not None:
        return 1, (pcol, lcol)
    first = rows[0][0].strip() if rows[0] else ""
    names_a_file = first and (is_image_path(Path(first)) or is_regular_file(
        Path(first) if Path(first).is_absolute() else path.parent / first))
    if pcol is not None or lcol is not None or (first and not names_a_file):
        raise DataError(
            f"{path}, first row: {', '.join(repr(c) for c in rows[0][:4])} is not a header headstart "
            f"reads, nor a row naming an image file; name the columns with a header such as "
            f"'path,label' (image column: {', '.join(PATH_COLUMNS[:4])}, ...; label column: "
            f"{', '.join(LABEL_COLUMNS[:5])}, ...)")
    return 0, (0, 1)


def _short(p: Path, limit: int = 200) -> str:
    s = str(p)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def from_memory(images, labels) -> ImageDataset:
    if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype != object:
        images = list(images)
    images, labels = list(images), [str(x) for x in np.asarray(labels).tolist()]
    if len(images) != len(labels):
        raise DataError(f"got {len(images)} images but {len(labels)} labels; pass one label per "
                        "image")
    return ImageDataset(images, labels)


def validate(ds: LabelledData, *, min_classes: int = 2) -> LabelledData:
    if len(ds) == 0:
        raise DataError(f"{ds.root}: no {ds.unit} found{ds.looked_for}")
    if len(ds.classes) < min_classes:
        raise DataError(f"{ds.root}: only one class ('{ds.classes[0]}') found; a classifier needs "
                        "at least two classes, each in its own sub-folder or label")
    return ds


def require_two_per_class(ds: LabelledData) -> None:
    """Training with validation needs one example of each class on each side of the split."""
    single = [c for c, n in ds.counts().items() if n < 2]
    if single:
        raise DataError(f"{ds.root}: class(es) {', '.join(repr(c) for c in single)} have a "
                        f"single example; a class needs at least two {ds.unit} (one to train on, "
                        "one to validate); add examples, remove the class, or pass "
                        "--val-fraction 0")


def stratified_split(labels: Sequence[str], val_fraction: float, seed: int,
                     ) -> tuple[list[int], list[int]]:
    """Indices for train and validation, keeping each class's share; every class keeps at least
    one training image, and gets a validation image only when it has two or more. By hand, not
    scikit-learn's train_test_split: this is the split every recorded figure was made on."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, val = [], []
    for y in sorted(by_class):
        idx = rng.permutation(by_class[y]).tolist()
        n_val = int(round(len(idx) * val_fraction)) if val_fraction > 0 else 0
        n_val = min(max(n_val, 1 if val_fraction > 0 and len(idx) >= 2 else 0), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)
