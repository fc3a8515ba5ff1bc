"""The registry of modalities, and what asks all of them: which modality data holds (from what
the user passed, reading no more than a header) and reading it as a dataset.

Detection asks the modalities in the order they were registered (`modalities/__init__.py`
imports them): a file in a class folder belongs to the first that claims it; a CSV/TSV to the
one whose `table_claim` is highest; data that says nothing is the fallback modality's.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..data.datasets import LabelledData, csv_delimiter, validate
from ..data.folders import first_files, is_folder
from ..data.images import is_regular_file
from ..exceptions import ConfigError, DataError
from .base import Modality

_REGISTRY: dict[str, Modality] = {}
TABLE_SUFFIXES = (".csv", ".tsv")  # tables any modality may hold (see Modality.table_claim)


def register(modality: Modality) -> Modality:
    """Add a modality (a later one of the same name replaces it)."""
    _REGISTRY[modality.name] = modality
    return modality


def get(name) -> Modality:
    """The modality named `name` (a Modality is returned as it is)."""
    if isinstance(name, Modality):
        return name
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise ConfigError(f"unknown modality {name!r}; headstart reads "
                          f"{', '.join(_REGISTRY)}") from None


def all_modalities() -> list[Modality]:
    return list(_REGISTRY.values())


def fallback() -> Modality:
    return next(m for m in _REGISTRY.values() if m.fallback)


def of(thing) -> Modality:
    """The modality of a backbone, a BackboneConfig, a dataset or a trained model."""
    config = getattr(thing, "config", thing)
    return get(getattr(config, "modality"))


def _first(claims) -> Modality | None:
    return next((m for m in _REGISTRY.values() if claims(m)), None)


# -- what kind of data is this? ---------------------------------------------------------------
def detect(data, labels=None) -> Modality:
    """The modality of what the user passed (without reading more than a header)."""
    if isinstance(data, LabelledData):
        return get(data.modality)
    if isinstance(data, (str, Path)) and labels is None:
        path = Path(data)
        if is_folder(path):
            return _folder(path) or fallback()
        if path.suffix.lower() in TABLE_SUFFIXES and is_regular_file(path):
            return _table(path)
        return _first(lambda m: m.claims_data_file(path)) or fallback()
    if labels is not None and not isinstance(data, np.ndarray):
        items = list(data)[:50]
        return _first(lambda m: m.claims_items(items)) or fallback()
    return fallback()


def _folder(root: Path) -> Modality | None:
    for p in first_files(root):
        found = _first(lambda m: m.claims_member(p))
        if found is not None:
            return found
    return None


def _table(path: Path) -> Modality:
    """The modality with the highest claim on the table's header and first cells. An empty
    file is an error: it tells neither."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a header and rows such as "
                        "'path,label' (images) or 'text,label' (texts)")
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            head = f.read(1 << 20)  # the header and first row, or the first MiB of them
        reader = csv.reader(io.StringIO(head, newline=""), delimiter=csv_delimiter(head, path))
        header, first = next(reader, []), next(reader, [])
    except (OSError, csv.Error):
        return fallback()
    cols = [c.strip().lower() for c in header]
    cells = [c.strip() for c in header[:1] + first[:1]]
    best = max(_REGISTRY.values(), key=lambda m: m.table_claim(cols, cells))
    return best if best.table_claim(cols, cells) > 0 else fallback()


def sniff(data, labels=None) -> Modality | None:
    """The modality the data shows, or None when it does not tell (a path that does not
    exist, a folder holding no file any modality claims)."""
    if isinstance(data, (str, Path)) and labels is None:
        path = Path(data)
        if is_folder(path):
            return _folder(path)
        if not is_regular_file(path) or path.stat().st_size == 0:
            return None
        if path.suffix.lower() in TABLE_SUFFIXES:
            return _table(path)
        if any(m.claims_data_file(path) for m in _REGISTRY.values()):
            return detect(path)
        return _first(lambda m: m.claims_member(path))
    return detect(data, labels)


def check_modality(data, labels, modality, who) -> None:
    """Data of another modality than a run's is named as such, before it is read."""
    modality = get(modality)
    given = sniff(data, labels)
    if given is not None and given is not modality:
        raise DataError(f"{describe_data(data)} holds {given.plural}, but {who} classifies "
                        f"{modality.plural}; pass {modality.plural} like those it was trained on")


def describe_data(data) -> str:
    if isinstance(data, (str, Path)):
        return str(data)
    if isinstance(data, LabelledData):
        return data.root
    return "the data"


# -- reading ------------------------------------------------------------------------------------
def load_dataset(data, labels=None, *, skip_bad: bool = False, min_classes: int = 2,
                 modality=None, text_options=None) -> LabelledData:
    """Turn what the user gave into a dataset: a folder, a CSV/TSV/JSONL file, or inputs +
    labels. `modality` (a name or a Modality) is detected from the data when not given.
    Training needs two classes or more; evaluation (min_classes=1) accepts one."""
    m = get(modality) if modality is not None else detect(data, labels)
    return validate(m.load(data, labels, skip_bad=skip_bad, options=text_options),
                    min_classes=min_classes)
