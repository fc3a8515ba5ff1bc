"""Datasets from folders, CSVs and memory; the stratified split."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from headstart import DataError
from headstart.data import stratified_split
from headstart.modalities import load_dataset


def test_folder_dataset(make_folder):
    data = make_folder(classes=("cat", "dog", "emu"), n=3)
    (data / "dog" / "nested").mkdir()
    (data / "dog" / "0.png").rename(data / "dog" / "nested" / "0.png")
    ds = load_dataset(data)
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.counts() == {"cat": 3, "dog": 3, "emu": 3}
    assert str(data / "dog" / "nested" / "0.png") in ds.sources
    sub = ds.subset([0, 4])
    assert len(sub) == 2 and sub.labels == [ds.labels[0], ds.labels[4]]


def test_hidden_folders_are_not_classes(make_folder):
    data = make_folder()
    (data / ".thumbnails").mkdir()
    assert load_dataset(data).classes == ["a", "b"]


@pytest.mark.parametrize("header", ["path,label\n", "file,label\n", "image,label\n", ""])
def test_csv_relative_and_absolute_paths(make_folder, header):
    data = make_folder(n=2)
    rows = ["a/0.png,a", f"{data / 'a' / '1.png'},a", "b/0.png , b", "", "b/1.png,b"]
    (data / "list.csv").write_text(header + "\n".join(rows) + "\n")
    ds = load_dataset(data / "list.csv")
    assert ds.labels == ["a", "a", "b", "b"]
    assert ds.sources[0] == str(data / "a" / "0.png")


def test_tsv(make_folder):
    data = make_folder(n=1)
    (data / "list.tsv").write_text("a/0.png\ta\nb/0.png\tb\n")
    assert load_dataset(data / "list.tsv").labels == ["a", "b"]


@pytest.mark.parametrize("header", ["path;label\n", ""])
def test_semicolon_csv_of_images(make_folder, header):
    data = make_folder(n=1)
    (data / "list.csv").write_text(header + "a/0.png;a\nb/0.png;b\n")
    ds = load_dataset(data / "list.csv")
    assert ds.labels == ["a", "b"] and ds.sources[1] == str(data / "b" / "0.png")


def test_memory_dataset_validates():
    imgs = [np.zeros((8, 8, 3), np.uint8)] * 3
    assert load_dataset(imgs, labels=[1, 2, 1]).labels == ["1", "2", "1"]
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_dataset(imgs, labels=[1, 2])
    with pytest.raises(DataError, match="only one class"):
        load_dataset(imgs, labels=[1, 1, 1])
    with pytest.raises(DataError, match="cannot read a dataset from int"):
        load_dataset(5)


def test_stratified_split_keeps_shares_and_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"]
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr + va) == list(range(len(labels))) and not set(tr) & set(va)
    cv = Counter(labels[i] for i in va)
    ct = Counter(labels[i] for i in tr)
    assert cv == {"a": 2, "b": 1, "c": 1}
    assert set(ct) == {"a", "b", "c", "d"}  # every class keeps a training image
    assert stratified_split(labels, 0.2, seed=0) == (tr, va)
    assert stratified_split(labels, 0.2, seed=1) != (tr, va)
    assert stratified_split(labels, 0.0, seed=0) == (list(range(len(labels))), [])
