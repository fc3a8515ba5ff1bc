"""Labelled texts: a CSV, TSV or JSONL file with text and label columns, a folder of class
sub-folders holding `.txt` files (one text per file), or Python lists.

Nothing is dropped silently: an empty or whitespace-only text, a missing column, a file that is
not valid in the stated encoding are errors naming the file and line, or, with `skip_bad`,
skipped and listed.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..exceptions import DataError
from .datasets import LABEL_COLUMNS, LabelledData, csv_delimiter
from .folders import class_files, is_folder, scan_root
from .images import is_regular_file

TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson")
TEXT_COLUMNS = ("text", "sentence", "content", "body", "review", "document", "comment")
FIELD_LIMIT = 64 * 2**20  # characters in one CSV cell (Python's default, 128 Ki, cuts long texts)


@dataclass
class TextDataset(LabelledData):
    sources: list[str]  # the texts themselves
    origins: list[str] = field(default_factory=list)  # "file, line N" of each text, for messages
    modality = "text"
    unit = "texts"

    def subset(self, indices: Sequence[int]) -> "TextDataset":
        return TextDataset([self.sources[i] for i in indices], [self.labels[i] for i in indices],
                           root=self.root,
                           origins=[self.origins[i] for i in indices] if self.origins else [])

    def joined(self, other: "LabelledData") -> "TextDataset":
        origins = (self.describe_sources() + other.describe_sources()
                   if self.origins or getattr(other, "origins", None) else [])
        return TextDataset(self.sources + other.sources, self.labels + other.labels,
                           root=self.root, origins=origins)

    def describe_sources(self) -> list[str]:
        return self.origins or [f"text {i + 1}" for i in range(len(self))]


@dataclass(frozen=True)
class TextOptions:
    text_column: str | None = None  # None: the first of TEXT_COLUMNS present
    label_column: str | None = None  # None: the first of LABEL_COLUMNS present
    encoding: str = "utf-8"  # another codec (e.g. cp1252) decodes files that are not UTF-8


# -- loading ----------------------------------------------------------------------------------
def load_texts(data, labels=None, *, skip_bad: bool = False,
               options: TextOptions | None = None) -> TextDataset:
    opts = options or TextOptions()
    if isinstance(data, TextDataset):
        return data
    if labels is not None:
        return _checked(from_lists(data, labels), skip_bad)
    path = Path(data)
    if not os.path.lexists(path):
        raise DataError(f"{path}: no such file or folder; pass a CSV/TSV/JSONL file of text,label "
                        "rows or a folder of class sub-folders holding .txt files")
    if is_folder(path):
        return _checked(from_text_folder(path, opts), skip_bad)
    if path.suffix.lower() in TABLE_EXTENSIONS:
        return _checked(from_table(path, opts), skip_bad)
    raise DataError(f"{path}: expected a .csv, .tsv or .jsonl file of texts and labels, or a "
                    f"folder of class sub-folders of .txt files, got a '{path.suffix}' file")


def decode(raw: bytes, where: str, encoding: str) -> str:
    """Bytes to text in the stated encoding, or an error naming the line of the first bad byte."""
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    if utf8 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 BOM: Excel's "Unicode text"
        encoding = "utf-16"
    try:
        text = raw.decode("utf-8-sig" if utf8 and encoding != "utf-16" else encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{where}, line {line}: not valid {encoding} (byte 0x{raw[e.start]:02x} "
                        f"at column {col}); re-save the file as UTF-8, or pass --encoding cp1252 "
                        "(or the file's real encoding) to decode it") from None
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}'; use a Python codec name such as utf-8, "
                        "cp1252 or latin-1") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise DataError(f"{where}, line {line}: holds a NUL character, so it is not a text file "
                        f"in {encoding}; re-save it as UTF-8 text (or pass --encoding with the "
                        "file's real encoding)")
    return text


def _read(path: Path, encoding: str) -> str:
    if not is_regular_file(path):
        raise DataError(f"{path}: not a regular file; pass a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); check that the file is "
                        "readable") from None
    return decode(raw, str(path), encoding)


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str,
          path: Path) -> str:
    lowered = {c.strip().lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
    else:
        for d in defaults:
            if d in lowered:
                return lowered[d]
    asked = f"'{wanted}'" if wanted else f"one of {', '.join(defaults[:4])}, ..."
    flag = "--text-column" if what == "text" else "--label-column"
    raise DataError(f"{path}: no {what} column {asked}; the columns are "
                    f"{', '.join(repr(c) for c in columns) or '(none)'}; name it with {flag}")


def from_table(path: Path, options: TextOptions | None = None, *,
               need_labels: bool = True) -> TextDataset:
    """Texts (and labels) from a CSV/TSV/JSONL file; without need_labels, labels are '?'."""
    opts = options or TextOptions()
    text = _read(path, opts.encoding)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(text, path)
    else:
        rows = _csv_rows(text, path)
    columns = list(rows[0][1]) if rows else []
    tcol = _pick(columns, opts.text_column, TEXT_COLUMNS, "text", path)
    lcol = _pick(columns, opts.label_column, LABEL_COLUMNS, "label", path) if need_labels else ""
    ds = TextDataset([], [], root=str(path))
    for line, row in rows:
        label = row.get(lcol) if need_labels else "?"
        where = f"{path}, line {line}"
        if label is None or not str(label).strip():
            raise DataError(f"{where}: the label ('{lcol}') is empty; give every row a label")
        ds.sources.append("" if row.get(tcol) is None else str(row.get(tcol)))
        ds.labels.append(str(label).strip())
        ds.origins.append(where)
    return ds


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text, path))
    try:
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not readable as CSV ({e}); fix the "
                        "quoting of that line") from None
    return _with_header(rows, reader.fieldnames or [], path)


def _with_header(rows, fieldnames, path: Path):
    if not fieldnames:
        raise DataError(f"{path}: the file is empty; expected a header row such as 'text,label'")
    names = [str(c).strip().lower() for c in fieldnames]
    twice = sorted({c for c in names if names.count(c) > 1 and c})
    if twice:
        raise DataError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} more "
                        "than once; give every column its own name")
    return [(n, {k: v for k, v in r.items() if k is not None}) for n, r in rows
            if any((v or "").strip() for v in r.values() if isinstance(v, str))]


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            why = getattr(e, "msg", "nested too deeply")
            raise DataError(f"{path}, line {n}: not valid JSON ({why}); write one JSON object "
                            "per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object like "
                            '{"text": "...", "label": "..."}, got ' + type(obj).__name__)
        rows.append((n, obj))
    return rows


def from_text_folder(root: Path, options: TextOptions | None = None) -> TextDataset:
    opts = options or TextOptions()
    ds = TextDataset([], [], root=str(root))
    class_dirs = scan_root(root, ds)
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders found; expected {root}/<class>/<file>.txt")
    for d, p in class_files(class_dirs, ds):
        if p.suffix.lower() != ".txt":
            raise DataError(f"{p}: not a .txt file; a text folder holds one .txt file per "
                            "text; remove it or move it out")
        ds.sources.append(_read(p, opts.encoding))
        ds.labels.append(d.name)
        ds.origins.append(str(p))
    empty = [d.name for d in class_dirs if d.name not in set(ds.labels)]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty)} hold no .txt files; add "
                        "texts or remove the folder(s)")
    return ds


def from_lists(texts, labels) -> TextDataset:
    texts, labels = list(texts), [str(x) for x in np.asarray(labels).tolist()]
    if len(texts) != len(labels):
        raise DataError(f"got {len(texts)} texts but {len(labels)} labels; pass one label per "
                        "text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"text {bad[0] + 1} is a {type(texts[bad[0]]).__name__}, not a string; "
                        "pass texts as str")
    return TextDataset(texts, labels, origins=[f"text {i + 1}" for i in range(len(texts))])


def check_not_empty(texts: list[str], names: list[str]) -> None:
    for t, n in zip(texts, names):
        if not t.strip():
            raise DataError(f"{n or 'a text'}: the text is empty or only whitespace; give a text "
                            "to classify")


def _checked(ds: TextDataset, skip_bad: bool) -> TextDataset:
    """Empty or whitespace-only texts are errors (or, with skip_bad, skipped and listed)."""
    empty = [i for i, t in enumerate(ds.sources) if not t.strip()]
    if not empty:
        return ds
    names = ds.describe_sources()
    if not skip_bad:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"{names[empty[0]]}: the text is empty or only whitespace{more}; remove "
                        "it or pass --skip-bad")
    keep = [i for i in range(len(ds)) if i not in set(empty)]
    out = ds.subset(keep)
    out.ignored_system_files, out.ignored = ds.ignored_system_files, ds.ignored
    out.skipped = [f"{names[i]}: empty or whitespace-only text" for i in empty]
    return out
