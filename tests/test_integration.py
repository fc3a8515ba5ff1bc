"""The real thing, at reduced sizes: EfficientNet-Lite0 with its shipped ImageNet weights and the
animal-mnist images that ship in a package."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ANIMAL_PER_CLASS as PER_CLASS, history_rows

pytestmark = pytest.mark.integration

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


@pytest.fixture(scope="session")
def animal_probe(animals, tmp_path_factory):
    from headstart.cli.main import main
    root, _ = animals
    out = tmp_path_factory.mktemp("animal-runs") / "probe"
    rc = main(["train", str(root / "train"), "--out", str(out), "--strategy", "linear_probe",
               "--image-size", "64", "--quiet"])
    assert rc == 0
    return out


def test_make_dataset_layout(animals):
    root, _ = animals
    assert sorted(p.name for p in (root / "train").iterdir()) == ANIMALS
    assert sorted(p.name for p in (root / "test").iterdir()) == ANIMALS
    for c in ANIMALS:
        assert len(list((root / "train" / c).glob("*.png"))) == PER_CLASS
        assert len(list((root / "test" / c).glob("*.png"))) == 200
    train = {p.name for p in (root / "train").rglob("*.png")}
    test = {p.name for p in (root / "test").rglob("*.png")}
    assert not train & test  # the hold-out is never trained on


def test_make_dataset_reuses_a_complete_folder(animals, cli):
    root, _ = animals
    before = sorted(str(p) for p in (root / "train").rglob("*.png"))
    r = cli("make-dataset", "animal-mnist", root, "--per-class", PER_CLASS)
    assert r.rc == 0, r
    assert sorted(str(p) for p in (root / "train").rglob("*.png")) == before


def test_make_dataset_refuses_a_foreign_folder(cli, tmp_path):
    pytest.importorskip("animal_mnist")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    line = cli("make-dataset", "animal-mnist", tmp_path / "busy", "--per-class",
               "2").one_line_error()
    assert str(tmp_path / "busy") in line
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_linear_probe_beats_chance_on_the_hold_out(animal_probe, animals, cli):
    _, test = animals
    metrics = json.loads((animal_probe / "metrics.json").read_text())
    assert metrics["backbone"] == "efficientnet_lite0" and metrics["image_size"] == 64
    r = cli("evaluate", animal_probe, test, "--json")
    assert r.rc == 0, r
    report = r.json()
    assert report["n"] == 10 * TEST_PER_CLASS
    assert report["accuracy"] > 0.5, report["accuracy"]  # chance is 0.1
    assert report["classes"] == ANIMALS
    assert set(report["per_class"]) == set(ANIMALS)
    for m in report["per_class"].values():
        assert m["support"] == TEST_PER_CLASS and 0 <= m["f1"] <= 1
    assert 0 < report["macro_f1"] <= 1
    assert (animal_probe / "confusion_test-slice.png").is_file()


def test_fine_tune_efficientnet_groups(animals, tmp_path):
    """Two top groups of the real network train; earlier groups and every BatchNorm statistic
    keep their ImageNet values."""
    from headstart import TrainConfig, api, create_backbone
    root, _ = animals
    cfg = TrainConfig(strategy="fine_tune", unfreeze="2", image_size=64, epochs=1,
                      val_fraction=0.0, batch_size=50)
    result = api.train(root / "train", tmp_path / "ft", config=cfg, progress=False,
                       log=lambda *_: None)
    assert [r["phase"] for r in history_rows(tmp_path / "ft")] == ["head", "fine_tune"]
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["unfreeze"] == "2"
    saved = load_file(str(tmp_path / "ft" / "model.safetensors"))
    source = create_backbone("efficientnet_lite0", image_size=64).state_dict()
    stats = [k for k in source if "running_" in k]
    assert stats and all(torch.equal(saved["backbone." + k], source[k]) for k in stats)
    assert torch.equal(saved["backbone.net._conv_stem.weight"], source["net._conv_stem.weight"])
    assert not torch.equal(saved["backbone.net._conv_head.weight"],
                           source["net._conv_head.weight"])
    assert result.metrics["epochs_run"] == 2


def test_imagenet_top5_without_a_run(cli, china_jpg):
    r = cli("predict", china_jpg)
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0] == str(china_jpg) and len(lines) == 6
    r = cli("predict", china_jpg, "--json")
    (result,) = r.json()
    top = result["top"]
    assert len(top) == 5
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
    labels = [t["label"] for t in top]
    assert {"palace", "bell tower", "monastery", "church", "mosque", "stupa"} & set(labels), labels
    assert labels[0] == "palace" and probs[0] > 0.25


def test_predict_without_imagenet_labels(cli, china_jpg):
    line = cli("predict", china_jpg, "--backbone", "tiny_cnn").one_line_error()
    assert "tiny_cnn" in line and "--run" in line
