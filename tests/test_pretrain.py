"""Your own source model: pretrain, transfer from it like a shipped backbone, refuse one that does
not fit, L2-SP, and the forgetting diagnostics (drift per group, source-task retention)."""
from __future__ import annotations

import json

import pytest
import torch

from headstart import api
from headstart.backbones import create_backbone, get_config
from headstart.exceptions import SourceMismatchError, WeightsError
from headstart.pretrain import pretrain
from headstart.training import TrainConfig
from headstart.training.forgetting import L2SP, group_drift, snapshot

from conftest import write_folder

QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture(scope="session")
def source(tmp_path_factory):
    """A tiny_cnn source model pre-trained from scratch on classes a-d; the 8 held-out source
    examples (sample_size 12 asks for more than there are) are kept with it."""
    root = tmp_path_factory.mktemp("src")
    data = write_folder(root / "data", ("a", "b", "c", "d"), 10, seed=11)
    pretrain(data, root / "src", arch="tiny_cnn", sample_size=12,
             config=TrainConfig(epochs=3, input_size=32, patience=5), **QUIET)
    return root / "src"


def test_pretrain_writes_a_complete_source_model(source, cli):
    meta = json.loads((source / "source.json").read_text())
    assert meta["arch"] == "tiny_cnn" and meta["classes"] == ["a", "b", "c", "d"]
    assert meta["examples"] == 40 and 0 <= meta["held_out_accuracy"] <= 1
    assert meta["source_sample"] == len(list((source / "source_sample").rglob("*.png"))) > 0
    cfg = get_config(str(source))
    assert cfg.num_source_classes == 4 and cfg.input_size == 32
    assert "held-out accuracy" in cfg.pretraining


def test_source_model_loads_its_weights_and_head(source):
    state = api.load(source).model.state_dict()
    b = create_backbone(str(source))
    assert all(torch.equal(v, state["backbone." + k]) for k, v in b.state_dict().items())
    head = b.source_classifier()
    assert torch.equal(head.fc.weight, state["head.fc.weight"])
    scratch = create_backbone(str(source), pretrained=False)  # same architecture, random init
    assert not torch.equal(scratch.stem[0].weight, b.stem[0].weight)


def test_train_from_own_source_reports_drift_and_retention(source, tmp_path, cli):
    target = write_folder(tmp_path / "t", ("x", "y"), 6, seed=12)
    r = cli("train", target, "--out", tmp_path / "run", "--backbone", source, "--strategy",
            "fine_tune", "--epochs", "2", "--val-fraction", "0", "--quiet")
    assert r.rc == 0, r.err
    assert "source task retained: accuracy" in r.out
    f = json.loads((tmp_path / "run" / "metrics.json").read_text())["forgetting"]
    assert set(f["drift"]) == {"stem", "block1", "block2"} and max(f["drift"].values()) > 0
    meta = json.loads((source / "source.json").read_text())
    assert f["retention"]["source_examples"] == meta["source_sample"] == 8  # the 8 held out
    # the sample is the held-out part itself: the same accuracy as at the end of pretraining
    assert f["retention"]["source_accuracy_before"] == pytest.approx(meta["held_out_accuracy"])


def test_shipped_backbone_drift_without_retention(tmp_path):
    target = write_folder(tmp_path / "t", ("x", "y"), 6, seed=13)
    r = api.train(target, config=TrainConfig(backbone="tiny_cnn", strategy="fine_tune",
                                             epochs=1, input_size=32, val_fraction=0), **QUIET)
    f = r.metrics["forgetting"]
    assert f["retention"] is None and "ImageNet's images" in f["retention_note"]


def test_mismatched_source_is_refused_with_a_report(source, tmp_path, cli):
    target = write_folder(tmp_path / "t", ("x", "y"), 6, seed=14)
    r = cli("train", target, "--out", tmp_path / "r1", "--backbone", "efficientnet_lite0",
            "--weights", source / "model.safetensors", "--image-size", "64", "--quiet")
    line = r.one_line_error()
    assert "does not fit: architecture: source tiny_cnn vs requested efficientnet_lite0" in line
    assert f"--backbone {source}" in line
    r = cli("train", target, "--out", tmp_path / "r2", "--backbone", source, "--image-size", "64",
            "--quiet")
    assert "input size: source 32px vs requested 64px" in r.one_line_error()
    with pytest.raises(SourceMismatchError, match="modality: source image vs requested text"):
        api.train(["a b", "c d", "e f", "g h"], labels=["p", "p", "q", "q"],
                  config=TrainConfig(backbone=str(source)), **QUIET)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_small_cnn_ships_no_weights():
    with pytest.raises(WeightsError, match="small_cnn ships no pre-trained weights.*pretrain"):
        create_backbone("small_cnn")
    assert create_backbone("small_cnn", pretrained=False)(torch.zeros(2, 3, 32, 32)).shape == (2,
                                                                                                256)


def test_l2sp_penalty_and_drift_formulas():
    net = create_backbone("tiny_cnn")
    ref = snapshot(net)
    reg = L2SP(net, alpha=0.5)
    assert float(reg.penalty().detach()) == 0.0
    with torch.no_grad():
        net.block2[0].weight.add_(1.0)
    n = net.block2[0].weight.numel()
    assert float(reg.penalty().detach()) == pytest.approx(0.5 * 0.5 * n)
    drift = group_drift(net, ref)
    assert drift["stem"] == 0 and drift["block1"] == 0 and drift["block2"] > 0


def test_l2sp_keeps_weights_closer_to_the_source(source, tmp_path):
    target = write_folder(tmp_path / "t", ("x", "y"), 8, seed=15)
    drift = {}
    for alpha in (0.0, 10.0):  # 40 steps: the pull towards the source needs steps to act
        cfg = TrainConfig(backbone=str(source), strategy="fine_tune", epochs=10, batch_size=4,
                          val_fraction=0, lr=3e-3, l2sp=alpha)
        drift[alpha] = sum(api.train(target, config=cfg, **QUIET)
                           .metrics["forgetting"]["drift"].values())
    assert drift[10.0] < 0.5 * drift[0.0]


def test_text_source_model(tmp_path):
    texts = [f"{w} report number {i}" for w in ("market", "match") for i in range(8)]
    labels = ["business"] * 8 + ["sport"] * 8
    src = pretrain(texts, tmp_path / "tsrc", arch="tiny_text", labels=labels, sample_size=4,
                   config=TrainConfig(epochs=1, refit="full"), **QUIET)
    # the held-out part is the source's test and retention sample: never trained on
    assert "refit_full" not in src.metrics and src.config.refit == "none"
    r = api.train(["shares rose", "goal scored", "profits fell", "cup final"],
                  labels=["b", "s", "b", "s"], config=TrainConfig(
                      backbone=str(tmp_path / "tsrc"), strategy="fine_tune", epochs=1), **QUIET)
    assert r.metrics["forgetting"]["retention"]["source_examples"] == 4


def test_source_model_features_keep_the_cache_outside_the_source(source, tmp_path):
    from headstart.training import FeatureExtractor
    from headstart.backbones import cache_dir

    ex = FeatureExtractor(create_backbone(str(source)))
    ex(torch.zeros(2, 3, 32, 32).numpy())
    assert not list(source.parent.glob("*.onnx"))  # the exported graph lives in the cache
    if ex.engine == "onnxruntime":
        assert list((cache_dir() / "onnx").glob("src-*-32.onnx"))
