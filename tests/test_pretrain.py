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


def test_fine_tuning_your_own_source_continues_at_its_rate_for_its_whole_schedule(source,
                                                                                  tmp_path):
    """A source pre-trained from scratch records the rate it was trained at (the image scratch
    default here); fine-tuning it (fine_tune, or auto's top_tune) defaults to that rate,
    SOURCE_EPOCHS epochs and no early stop. What the user sets stays; a probe from it, a
    shipped backbone and a source that was itself a transfer keep the usual defaults."""
    from headstart.modalities.image import DEFAULT_LR
    from headstart.training.config import PATIENCE
    from headstart.training.model import SOURCE_EPOCHS
    assert get_config(str(source)).trained_lr == DEFAULT_LR["scratch"]
    assert get_config("tiny_cnn").trained_lr is None
    target = write_folder(tmp_path / "t", ("x", "y"), 10, seed=16)
    lines = []
    r = api.train(target, out=tmp_path / "ft", progress=False, log=lines.append,
                  config=TrainConfig(backbone=str(source), strategy="fine_tune"))
    c = r.config
    assert (c.lr, c.epochs, c.patience) == (DEFAULT_LR["scratch"], SOURCE_EPOCHS, SOURCE_EPOCHS)
    tuned = [h for h in r.history if h["phase"] == "fine_tune"]
    assert len(tuned) == SOURCE_EPOCHS and not r.metrics["stopped_early"]
    assert any(line.startswith("your source model, fine-tuned as it was trained: lr 0.003, "
                               "epochs 20, no early stop") for line in lines), lines
    stored = (tmp_path / "ft" / "config.yaml").read_text()
    assert f"patience: {SOURCE_EPOCHS}" in stored and "lr: 0.003" in stored
    # the user's settings stay; auto fine-tunes the top groups at the source's rate
    c = api.train(target, config=TrainConfig(backbone=str(source), epochs=2, patience=1),
                  **QUIET).config
    assert (c.lr, c.epochs, c.patience) == (DEFAULT_LR["scratch"], 2, 1)
    # a probe from the source, and a shipped backbone: nothing filled but the patience
    for cfg in (TrainConfig(backbone=str(source), strategy="linear_probe"),
                TrainConfig(backbone="tiny_cnn", strategy="fine_tune", epochs=1, input_size=32)):
        c = api.train(target, config=cfg, **QUIET).config
        assert (c.lr, c.patience) == (None, PATIENCE) and c.epochs in (None, 1)
    # a run that was a transfer (fine-tuned from the source) used as a source: no scratch rate
    assert get_config(str(tmp_path / "ft")).trained_lr is None


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


def test_fine_tuning_a_real_source_on_a_far_target_ends_at_or_above_its_probe(tmp_path):
    """The README's commands on real data: small_cnn pre-trained with its defaults on 200
    animal-mnist images of each of five animals, then scikit-learn's handwritten digits (a
    target far from silhouettes of animals), 20 per class, every setting at its default. The
    fine-tune runs its whole schedule at the source's rate, moves the body, and its held-out
    accuracy is at or above its own source's probe (dev splits: +3 to +5 points on average at
    10 and 50 per class, benchmarks/README.md; where the probe is already right on every
    validation image, the mix keeps it)."""
    pytest.importorskip("animal_mnist", reason="pip install --no-deps animal-mnist==0.4")
    import shutil

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from headstart.data.shipped import ANIMAL_CLASSES, write_animal_mnist
    from headstart.training.model import SOURCE_EPOCHS
    am = write_animal_mnist(tmp_path / "am", per_class=200, seed=0)
    for c in ANIMAL_CLASSES[:5]:
        shutil.copytree(am / "train" / c, tmp_path / "src-data" / c)
    pretrain(tmp_path / "src-data", tmp_path / "src", arch="small_cnn", **QUIET)
    digits = load_digits()
    pixels = (digits.images / 16 * 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        for part, chosen in (("train", idx[:20]), ("test", idx[20:70])):
            (tmp_path / part / str(c)).mkdir(parents=True)
            for i in chosen:
                Image.fromarray(pixels[i]).save(tmp_path / part / str(c) / f"{i}.png")
    acc, runs = {}, {}
    for strategy in ("linear_probe", "fine_tune"):
        runs[strategy] = api.train(tmp_path / "train", config=TrainConfig(
            backbone=str(tmp_path / "src"), strategy=strategy, flip=False), **QUIET)
        acc[strategy] = api.evaluate(runs[strategy], tmp_path / "test", progress=False)[0][
            "accuracy"]
    ft = runs["fine_tune"]
    assert sum(h["phase"] == "fine_tune" for h in ft.history) == SOURCE_EPOCHS
    assert ft.config.lr == get_config(str(tmp_path / "src")).trained_lr
    assert acc["fine_tune"] >= acc["linear_probe"], (acc, ft.metrics["mix"])
