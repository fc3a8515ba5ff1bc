"""Layer cuts (NAME@GROUP) are backbones like any other: train, evaluate, predict, the
estimator, the feature cache and ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart import TransferClassifier
from headstart.backbones import create_backbone, get_config
from headstart.backbones.cut import CutBackbone
from headstart.training.features import FeatureExtractor

TINY_CUT = ["--backbone", "tiny_cnn@block1", "--image-size", "32", "--quiet"]


def test_a_cut_is_described_by_the_registry():
    c = get_config("tiny_cnn@block1")
    assert c.name == "tiny_cnn@block1" and c.cut_of == "tiny_cnn" and c.cut == "block1"
    assert c.layer_groups == ("stem", "block1") and c.feature_dim == 16
    lite = get_config("efficientnet_lite0@stage6")
    assert lite.layer_groups[-1] == "stage6" and lite.feature_dim == 192
    text = get_config("minilm_l6@layer4")
    assert text.layer_groups == ("embeddings", "layer1", "layer2", "layer3", "layer4", "pooling")


@pytest.mark.parametrize("name,group", [("efficientnet_lite0", "stage4"),
                                        ("efficientnet_lite0", "stem"),
                                        ("efficientnet_lite0", "top"), ("tiny_cnn", "block1")])
def test_a_cut_computes_what_rank_taps(name, group):
    """The exportable cut (later layers dropped) gives exactly the features rank scores (a
    forward hook on the whole network)."""
    full = create_backbone(name, image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    tap = CutBackbone(full, (group,)).eval()
    want = tap(x)
    tap.remove_hooks()
    cut = create_backbone(f"{name}@{group}", image_size=64).eval()
    assert torch.equal(cut(x), want)
    later = full.config.layer_groups[full.config.layer_groups.index(group) + 1:]
    assert not set(later) & set(cut.group_modules())


def test_a_text_cut_computes_what_rank_taps():
    full = create_backbone("tiny_text").eval()
    batch = {"input_ids": torch.randint(0, 1000, (3, 12)), "attention_mask": torch.ones(3, 12,
             dtype=torch.long), "doc": torch.tensor([0, 0, 1]), "n_docs": 2}
    tap = CutBackbone(full, ("layer1",)).eval()
    want = tap(batch)
    tap.remove_hooks()
    assert torch.allclose(create_backbone("tiny_text@layer1").eval()(batch), want, atol=1e-6)


def test_unknown_group_is_a_one_line_error(cli, make_folder, tmp_path):
    r = cli("train", make_folder(), "--out", tmp_path / "run", "--backbone",
            "tiny_cnn@block7", "--image-size", "32", "--quiet")
    line = r.one_line_error()
    assert "block7" in line and "block1" in line
    assert not (tmp_path / "run").exists()


def test_train_evaluate_predict_with_a_cut(cli, make_folder, tmp_path):
    data = make_folder(n=8)
    run = tmp_path / "cut"
    assert cli("train", data, "--out", run, "--epochs", "2", *TINY_CUT).rc == 0
    config = (run / "config.yaml").read_text()
    assert "backbone: tiny_cnn@block1" in config
    r = cli("evaluate", run, data, "--json")
    assert r.rc == 0 and r.json()["n"] == 16
    img = next((data / "a").iterdir())
    r = cli("predict", "--run", run, img, "--json")
    assert r.rc == 0 and r.json()[0]["top"][0]["label"] in ("a", "b")


def test_estimator_takes_a_cut(make_folder):
    data = make_folder(n=8)
    paths = sorted(str(p) for p in data.rglob("*.png"))
    labels = [p.split("/")[-2] for p in paths]
    clf = TransferClassifier(backbone="tiny_cnn@block1", strategy="linear_probe",
                             input_size=32, verbose=False).fit(paths, labels)
    assert clf.feature_dim_ == 16
    assert set(clf.predict(paths[:4])) <= {"a", "b"}


@pytest.mark.integration
def test_real_cut_runs_on_onnx_runtime_and_trains(animals, cli, tmp_path):
    """efficientnet_lite0@stage6 on real images: its frozen features come from ONNX Runtime
    (the cut is a plain network, exportable), equal to PyTorch's, and a probe on them learns."""
    cut = create_backbone("efficientnet_lite0@stage6", image_size=64)
    ex = FeatureExtractor(cut)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert ex.engine == "onnxruntime"
    with torch.inference_mode():
        assert np.allclose(ex(batch), cut(torch.from_numpy(batch)).numpy(), atol=1e-4)
    root, test = animals
    run = tmp_path / "stage6"
    r = cli("train", root / "train", "--out", run, "--backbone", "efficientnet_lite0@stage6",
            "--strategy", "linear_probe", "--image-size", "64", "--quiet")
    assert r.rc == 0, r
    acc = json.loads(cli("evaluate", run, test, "--json").out)["accuracy"]
    assert acc > 0.4  # 10 classes: chance is 0.1


def test_a_cut_is_chosen_only_on_clear_paired_evidence():
    """A cut must beat the whole network on the same examples by more than 2 standard errors
    of the paired difference: 4 points on 50 images (two images) keep the whole network, 15
    points on 200 images choose the cut, and a tie keeps the whole network."""
    from headstart.training.sizing import _pick, clear_win

    def right(n, wrong):
        r = np.ones(n, dtype=bool)
        r[list(wrong)] = False
        return r
    whole, cut = right(50, range(10)), right(50, range(8))  # 80% vs 84%
    assert not clear_win(cut, whole)
    whole, cut = right(200, range(60)), right(200, range(30, 60))  # 70% vs 85%
    assert clear_win(cut, whole) and not clear_win(whole, cut)
    assert not clear_win(whole, whole)
    rows = [{"image_size": s, "backbone": b, "cv_accuracy": float(r.mean()),
             "relative_compute": 1.0} for s in (112, 224) for b, r in
            (("net@stage6", cut), ("net", whole))]
    assert _pick(rows, "net", [cut, whole, cut, whole]) == (112, "net@stage6")
    small_cut, small_whole = right(50, range(8)), right(50, range(10))
    rows50 = [dict(r, cv_accuracy=float(x.mean())) for r, x in
              zip(rows, [small_cut, small_whole] * 2)]
    assert _pick(rows50, "net", [small_cut, small_whole] * 2) == (112, "net")
