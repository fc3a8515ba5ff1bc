"""Features from several top layers of a text encoder: the pooled outputs, the choice measured by
cross-validation (`--layers auto`), runs that record and reload it, and the errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from conftest import write_csv
from headstart import api
from headstart.backbones import create_backbone
from headstart.data.tokenize import TextPreprocess
from headstart.exceptions import ConfigError
from headstart.training import TrainConfig
from headstart.training.features import FeatureExtractor
from headstart.modalities.text import embed_texts

QUIET = dict(progress=False, log=lambda *_: None)


def test_pooled_layers_are_the_last_first_each_normalised(articles):
    texts, _ = articles
    bb = create_backbone("tiny_text")
    pre = TextPreprocess(bb.config.tokenizer, 64)
    one = embed_texts(bb, pre, texts[:4])
    bb.set_feature_layers(2)
    assert bb.feature_dim == 2 * bb.config.feature_dim
    two = embed_texts(bb, pre, texts[:4])
    d = bb.config.feature_dim
    np.testing.assert_allclose(two[:, :d], one, atol=1e-5)  # a prefix is the smaller setting
    np.testing.assert_allclose(np.linalg.norm(two[:, d:], axis=1), 1.0, atol=1e-5)
    assert not np.allclose(two[:, d:], one, atol=1e-3)  # the layer below differs
    # written out: mean of layer 1's token states over every window of a text, normalised
    batch = pre.collate(pre.windows(texts[:1]))
    bb.eval()  # no dropout
    with torch.inference_mode():
        h = bb.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       output_hidden_states=True).hidden_states[-2]
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum((0, 1)) / m.sum()
    np.testing.assert_allclose(two[0, d:], (mean / mean.norm()).numpy(), atol=1e-5)


def test_layers_change_the_cache_key():
    bb = create_backbone("tiny_text")
    pre = TextPreprocess(bb.config.tokenizer, 64)
    k1 = FeatureExtractor(bb).key(pre)
    bb.set_feature_layers(2)
    assert FeatureExtractor(bb).key(pre) != k1


def test_bad_layer_counts_are_refused():
    with pytest.raises(ConfigError, match="has 2 transformer layers"):
        create_backbone("tiny_text").set_feature_layers(3)
    with pytest.raises(ConfigError, match="only text encoders"):
        create_backbone("tiny_cnn").set_feature_layers(2)
    with pytest.raises(ConfigError, match="layers must be"):
        TrainConfig(layers="many").validate()
    with pytest.raises(ConfigError, match="at least 1"):
        TrainConfig(layers=0).validate()


def test_auto_measures_and_records_the_choice(tmp_path, articles):
    texts, labels = articles
    lines: list[str] = []
    trained = api.train(texts, labels=labels, out=tmp_path / "run", progress=False,
                        log=lines.append, config=TrainConfig(backbone="tiny_text",
                                                             strategy="linear_probe",
                                                             layers="auto"))
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    rows = stored["layer_measurements"]
    assert [r["layers"] for r in rows] == [1, 2]  # tiny_text has two layers: 4 is not tried
    best = max(r["cv_accuracy"] for r in rows)
    assert stored["layers"] == min(r["layers"] for r in rows if r["cv_accuracy"] == best)
    assert any(line.startswith("feature layers:") for line in lines)
    assert trained.model.head.fc.in_features == 32 * stored["layers"]
    # every measured setting's features were stored, so the run read its own from the cache
    from headstart.training.features import FeatureCache
    from headstart.modalities.text import text_hash
    bb = create_backbone("tiny_text")
    pre = TextPreprocess(bb.config.tokenizer, 64)
    cache = FeatureCache()
    for k in (1, 2):
        bb.set_feature_layers(k)
        found = cache.get_many(FeatureExtractor(bb).key(pre), [text_hash(t) for t in texts], 0)
        assert len(found) >= 24 and all(v.shape == (32 * k,) for v in found.values())
    again = api.load(tmp_path / "run")
    np.testing.assert_allclose(api.predict_probs(again, texts[:5]),
                               api.predict_probs(trained, texts[:5]), atol=1e-5)


def test_explicit_layers_through_the_cli(tmp_path, cli, articles):
    texts, labels = articles
    data = write_csv(tmp_path / "t.csv", texts, labels)
    r = cli("train", data, "--out", tmp_path / "run", "--backbone", "tiny_text", "--strategy",
            "fine_tune", "--epochs", "1", "--layers", "2", "--quiet")
    assert r.rc == 0, r.err
    trained = api.load(tmp_path / "run")
    assert trained.config.layers == 2 and trained.model.head.fc.in_features == 64
    assert cli("predict", "--run", tmp_path / "run", "Shares rose").rc == 0
    r = cli("train", data, "--out", tmp_path / "bad", "--backbone", "tiny_text", "--layers", "9",
            "--quiet")
    assert r.rc != 0 and "use a number from 1 to 2" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "bad").exists()


def test_default_is_the_sentence_embedding(articles):
    texts, labels = articles
    trained = api.train(texts, labels=labels, config=TrainConfig(
        backbone="tiny_text", strategy="linear_probe"), **QUIET)
    assert trained.config.layers == 1 and trained.model.head.fc.in_features == 32


def test_images_and_scratch_use_one_layer(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for _ in range(12)]
    trained = api.train(images, labels=["a", "b"] * 6, config=TrainConfig(
        backbone="tiny_cnn", strategy="linear_probe", input_size=16, layers="auto"), **QUIET)
    assert trained.config.layers == 1
    scratch = api.train(["some words here", "other words there"] * 4, labels=["a", "b"] * 4,
                        config=TrainConfig(backbone="tiny_text", strategy="scratch", epochs=1,
                                           layers="auto"), **QUIET)
    assert scratch.config.layers == 1
