"""top_tune: the top layer groups fine-tuned on the frozen groups' output, computed once
(training/prefix.py), and the backbones' split that it stands on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import history_rows

from headstart import api
from headstart.backbones import create_backbone
from headstart.modalities import load_dataset
from headstart.strategies import build_plan
from headstart.training import TrainConfig, prefix
from headstart.training.batches import Split
from headstart.training.model import preprocess_for, seeded_model
from headstart.training.predict import predict_logits

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.mark.parametrize("name,size", [("tiny_cnn", 32), ("efficientnet_lite0", 64),
                                       ("efficientnet_lite0@stage6", 64)])
def test_split_at_every_group_composes_to_the_whole_network(name, size):
    b = create_backbone(name, pretrained=True, input_size=size).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = b(x)
        first, *later = b.config.layer_groups
        assert b.split_at(first) is None  # nothing below the first group to hold
        for g in later:
            below, rest = b.split_at(g)
            torch.testing.assert_close(rest(below(x)), whole, rtol=0, atol=0)


def test_top_tune_trains_the_top_groups_only_and_says_the_frozen_ones_ran_once(
        make_folder, tmp_path):
    data = make_folder(classes=("a", "b", "c"), n=10)
    lines = []
    r = api.train(data, out=tmp_path / "run", config=TrainConfig(
        backbone="tiny_cnn", strategy="top_tune", epochs=2, input_size=32, seed=1),
        progress=False, log=lines.append)
    assert [row["phase"] for row in history_rows(tmp_path / "run")] == ["head", "top_tune",
                                                                        "top_tune"]
    assert any("the frozen groups ran once (2 view(s) of 30 examples" in ln for ln in lines)
    drift = r.metrics["forgetting"]["drift"]
    assert drift["stem"] == 0  # below the tuned groups: never trained
    # the top two groups and the head trained (the mix may still have kept the probe)
    assert build_plan("top_tune", ("stem", "block1", "block2")).phases[1].train_groups == (
        "block1", "block2")


def test_top_tune_unfreeze_picks_how_many_top_groups():
    groups = ("stem", "block1", "block2")
    assert build_plan("top_tune", groups, unfreeze=1).phases[1].train_groups == ("block2",)
    assert build_plan("top_tune", groups, unfreeze=3).phases[1].train_groups == groups
    assert build_plan("top_tune", groups).phases[1].frozen_maps


def _tiny_splits(make_folder):
    ds = load_dataset(make_folder(classes=("a", "b"), n=6))
    y = np.array([ds.classes.index(v) for v in ds.labels])
    return Split(ds.subset(range(0, 12, 2)), y[0::2]), Split(ds.subset(range(1, 12, 2)), y[1::2])


def test_frozen_maps_give_the_logits_and_features_of_the_whole_model(make_folder):
    cfg = TrainConfig(backbone="tiny_cnn", input_size=32)
    train, val = _tiny_splits(make_folder)
    plan = build_plan("top_tune", ("stem", "block1", "block2"))
    model, pre = seeded_model(cfg, 2, plan), preprocess_for(cfg)
    maps = prefix.frozen_maps(model, "block1", train, val, pre=pre, views=2, batch_size=4,
                              max_pixels=10 ** 8, progress=False, log=lambda *_: None)
    assert maps.train.shape[:2] == (6, 2) and maps.val.shape[:2] == (6, 2)
    want = predict_logits(model, val.ds, pre, flip=True, engine="torch", progress=False)
    np.testing.assert_allclose(maps.logits(model), want, rtol=1e-5, atol=1e-5)
    drawn, count = maps.batches(range(6), train.y, batch_size=4, seed=0, epoch=0,
                                drop_last=True)
    batches = list(drawn)
    assert [len(t) for _, t in batches] == [4] and count == 1  # the last partial batch dropped
    again = list(maps.batches(range(6), train.y, batch_size=4, seed=0, epoch=0,
                              drop_last=True)[0])
    assert torch.equal(batches[0][0], again[0][0])  # the same views after a resume


def test_frozen_maps_over_the_memory_budget_train_on_the_inputs(make_folder, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(prefix, "BUDGET", 1)
    lines = []
    api.train(make_folder(n=6), out=tmp_path / "run", config=TrainConfig(
        backbone="tiny_cnn", strategy="top_tune", epochs=1, input_size=32),
        progress=False, log=lines.append)
    assert any("trained on the inputs (their frozen maps would take" in ln for ln in lines)
    assert [r["phase"] for r in history_rows(tmp_path / "run")] == ["head", "top_tune"]



def test_a_first_run_keeps_the_frozen_maps_of_its_pass_and_trains_the_same_model(
        make_folder, tmp_path, monkeypatch):
    """On an empty cache the pass that extracts the probe's features keeps the frozen groups'
    maps on the way (one graph, one pass), copies of training images among the validation
    ones included; on a warm cache the phase computes them. The two give the same model, bit
    for bit."""
    from safetensors.torch import load_file
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    data = make_folder(classes=("a", "b", "c"), n=10)
    for i in (1, 2, 3, 4, 5):  # copies: some land in validation beside their original
        (data / "a" / f"{i}.png").write_bytes((data / "a" / "0.png").read_bytes())
    cfg = TrainConfig(backbone="tiny_cnn", strategy="top_tune", epochs=2, input_size=32, seed=1)
    cold, warm = [], []
    api.train(data, out=tmp_path / "cold", config=cfg, progress=False, log=cold.append)
    api.train(data, out=tmp_path / "warm", config=cfg, progress=False, log=warm.append)
    assert any("copies in both training and validation" in ln for ln in cold), cold
    said = [ln for ln in cold if "the frozen groups ran once (2 view(s) of 30 examples" in ln]
    assert said and said[0].endswith("in the run's first pass over the inputs"), cold
    said = [ln for ln in warm if "the frozen groups ran once (2 view(s) of 30 examples" in ln]
    assert said and "first pass" not in said[0], warm
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("cold", "warm"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_the_default_on_a_real_backbone_tunes_its_top_on_frozen_maps(animals, cli, tmp_path):
    """EfficientNet-Lite0 on real animal-mnist images, with no strategy given: the probe, then
    its last two groups tuned on the frozen groups' maps; the earlier groups never move, and on
    the held-out slice the default is not below the probe by more than one standard error."""
    root, test = animals
    common = ["--image-size", "64", "--cut", "none"]
    run = cli("train", root / "train", "--out", tmp_path / "auto", *common)
    assert run.rc == 0 and "the frozen groups ran once (2 view(s)" in run.out, run.out[-2000:]
    assert cli("train", root / "train", "--out", tmp_path / "probe", "--strategy",
               "linear_probe", "--quiet", *common).rc == 0
    phases = [r["phase"] for r in history_rows(tmp_path / "auto")]
    assert phases[0] == "head" and set(phases[1:]) == {"top_tune"}
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    drift = metrics["forgetting"]["drift"]
    assert all(drift[g] == 0 for g in ("stem", "stage1", "stage6"))
    acc = {k: json.loads(cli("evaluate", tmp_path / k, test, "--json").out)["accuracy"]
           for k in ("auto", "probe")}
    se = (acc["probe"] * (1 - acc["probe"]) / len(list(test.rglob("*.png")))) ** 0.5
    assert acc["auto"] >= acc["probe"] - se, (acc, metrics["mix"])
