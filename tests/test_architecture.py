"""The seams: modalities asked instead of named, one option schema for the CLI, TrainConfig and
the estimator, the registries the code reads, a new modality as one module plus its backbone,
and the well-kept libraries used where they give the same figures."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import write_csv, write_folder
from headstart import ConfigError, TrainConfig, api, modalities
from headstart.backbones import (Backbone, BackboneConfig, count_flops, create_backbone,
                                 register_backbone)
from headstart.backbones import registry as backbone_registry
from headstart.data.datasets import LabelledData
from headstart.modalities import Extracted, Modality
from headstart.modalities import registry as modality_registry
from headstart.training.options import COMPARE, PRETRAIN, TRAIN, options

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"


# -- modalities -------------------------------------------------------------------------------
def test_the_registry_names_image_and_text():
    image, text = modalities.get("image"), modalities.get("text")
    assert modalities.get(image) is image and modalities.of(create_backbone("tiny_text")) is text
    assert image.default_backbone == "efficientnet_lite0" and text.default_backbone == "minilm_l6"
    assert image.auto_strategy == "top_tune" and text.auto_strategy == "contrastive"
    assert image.measures_input and not text.measures_input and text.measures_layers
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        modalities.get("audio")


def test_detection(tmp_path):
    images = write_folder(tmp_path / "imgs")
    texts = tmp_path / "texts"
    for c in ("a", "b"):
        (texts / c).mkdir(parents=True)
        (texts / c / "1.txt").write_text("some words")
    table = write_csv(tmp_path / "t.csv", ["good", "bad"], ["p", "n"])
    paths = tmp_path / "p.csv"
    paths.write_text("path,label\nimgs/a/0.png,a\n")
    bare = tmp_path / "bare.csv"
    bare.write_text("imgs/a/0.png,a\n")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "x", "label": "y"}\n')
    cases = [(images, "image"), (texts, "text"), (table, "text"), (paths, "image"),
             (bare, "image"), (jsonl, "text")]
    for data, expected in cases:
        assert modalities.detect(data).name == expected, data
    assert modalities.detect(["a text", "another"], ["x", "y"]).name == "text"
    assert modalities.detect([str(images / "a" / "0.png")], ["a"]).name == "image"
    assert modalities.detect(np.zeros((2, 8, 8, 3)), ["a", "b"]).name == "image"
    assert modalities.sniff(tmp_path / "missing") is None
    with pytest.raises(Exception, match="holds texts, but the run classifies images"):
        modalities.check_modality(texts, None, "image", "the run")


def test_no_code_outside_the_modalities_branches_on_a_modality_name():
    """The code asks the modality (modalities/) instead of comparing its name."""
    named = re.compile(r"""(modality\w*|\.name)\s*[!=]=\s*['"](image|text)['"]|"""
                       r"""['"](image|text)['"]\s*[!=]=\s*\w*modality|self\.text\b""")
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
             for p in SRC.rglob("*.py") if p.parent.name != "modalities"
             for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert found == []


# -- a new modality: one module and its backbone ------------------------------------------------
class VectorData(LabelledData):
    modality, unit = "vector", "vectors"


@dataclass(frozen=True)
class VectorPre:
    size: int

    def signature(self) -> str:
        return f"vectors|{self.size}"


class VectorModality(Modality):
    """Rows of numbers given with labels: what a tabular modality module would hold."""
    name, plural, size_unit, size_name = "vector", "vectors", "values", "width"
    default_backbone, auto_strategy, request = "tiny_mlp", "fine_tune", "vectors"
    default_lr, lr_spread = {"linear_probe": 1e-3, "fine_tune": 1e-3}, 1.0

    def claims_member(self, path):
        return False

    def claims_items(self, items):
        return bool(items) and all(isinstance(x, np.ndarray) and x.ndim == 1 for x in items)

    def load(self, data, labels=None, *, skip_bad=False, options=None):
        return VectorData(list(data), [str(y) for y in labels])

    def unlabelled(self, inputs, who):
        return VectorData(list(inputs), ["?"] * len(inputs))

    def content_key(self, source):
        return hashlib.blake2b(np.asarray(source, np.float32).tobytes()).hexdigest()

    def preprocess(self, bcfg, size, *, truncate=False):
        return VectorPre(int(size))

    def train_batches(self, split, order, *, batch_size, pairs, pre, augment, seed, epoch,
                      per_pass, workers):
        starts = range(0, len(order), batch_size)
        return ((torch.tensor(np.stack([split.ds.sources[i] for i in order[s:s + batch_size]]),
                              dtype=torch.float32),
                 torch.from_numpy(np.asarray(split.y[order[s:s + batch_size]], np.int64)))
                for s in starts), len(starts)

    def extract(self, ds, extractor, pre, *, views=1, cache=None, skip_bad=False,
                batch_size=32, progress=True, max_pixels=None, desc="features"):
        kept = list(range(len(ds)))
        if extractor is None:
            return Extracted(None, kept, [], 0)
        x = np.stack(ds.sources).astype(np.float32)
        return Extracted(extractor(x)[:, None, :], kept, [], 0)

    def dummy_input(self, size, batch=1):
        return torch.zeros(batch, size)


class TinyMLP(Backbone):
    def __init__(self, config, size, *, pretrained):
        super().__init__(config, size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.hidden = nn.Sequential(nn.Linear(size, config.feature_dim), nn.ReLU())

    def forward(self, x):
        return self.hidden(x)

    def group_modules(self):
        return {"hidden": [self.hidden]}


@pytest.fixture
def vectors():
    modality_registry._REGISTRY["vector"] = VectorModality()
    register_backbone(BackboneConfig(
        name="tiny_mlp", modality="vector", input_size=4, mean=(0,) * 3, std=(1,) * 3,
        feature_dim=16, layer_groups=("hidden",), pretraining="none", license="Apache-2.0",
        weights_source="built in", factory=TinyMLP))
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 20)
    x = [rng.normal(size=4) + (3.0 if c == "a" else -3.0) for c in y]
    yield x, y
    del modality_registry._REGISTRY["vector"]
    del backbone_registry._REGISTRY["tiny_mlp"]


@pytest.mark.parametrize("strategy", ["linear_probe", "fine_tune"])
def test_a_new_modality_trains_evaluates_and_predicts(vectors, strategy):
    x, y = vectors
    cfg = TrainConfig(strategy=strategy, epochs=2)  # backbone: the modality's default
    trained = api.train(x, labels=y, config=cfg, progress=False, log=lambda *_: None)
    assert trained.config.backbone == "tiny_mlp" and trained.modality.name == "vector"
    assert trained.metrics["val_accuracy"] == 1.0 and trained.metrics["train_examples"] == 32
    assert [p[0][0] for p in api.predict(trained, x[:4], top=1)] == list(y[:4])


# -- one schema -------------------------------------------------------------------------------
def test_the_command_line_options_are_the_schemas(cli, capsys):
    for command in (TRAIN, PRETRAIN, COMPARE):
        with pytest.raises(SystemExit):
            cli(command, "--help")
        text = capsys.readouterr().out
        for o in options(TrainConfig):
            for flag in o.flags:
                assert (flag in text) == (command in o.spec.commands), (command, flag)
    assert "--image-size" in text and "--input-size" in text  # the old spelling still works


def test_validation_comes_from_the_schema():
    cfg = TrainConfig(input_size="64", layers="2", seed=np.int64(4), C=2).validate()
    assert (cfg.input_size, cfg.layers, cfg.seed, cfg.C) == (64, 2, 4, 2.0)
    assert type(cfg.seed) is int and cfg.image_size == 64  # the former name reads it
    for bad, words in [(dict(batch_size=0), "batch_size must be a whole number, at least 1"),
                       (dict(epochs=2.5), "epochs must be"), (dict(C=0), "C must be"),
                       (dict(strategy="magic"), "unknown strategy 'magic'"),
                       (dict(input_size=4), "input_size must be 'auto' or a number of pixels")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            TrainConfig(**bad).validate()
    assert TrainConfig.from_dict({"image_size": 32, "refit": True}).input_size == 32


# -- registries -------------------------------------------------------------------------------
def test_rank_reads_the_score_registry():
    from headstart.transferability import SCORES
    from headstart.transferability.rank import SCORE_NAMES
    assert list(SCORE_NAMES) == [n for n, s in SCORES.items() if s.ranks]
    assert SCORE_NAMES == {"logme": "LogME", "hscore": "H-score", "leep": "LEEP", "nce": "NCE"}


def test_strategies_are_registered_plan_builders():
    from headstart.strategies import STRATEGIES, build_plan, register_strategy
    from headstart.strategies.builders import _REGISTRY
    from headstart.strategies.plan import Phase, Plan
    assert STRATEGIES == ("auto", "linear_probe", "fine_tune", "top_tune", "gradual", "scratch",
                          "contrastive")

    @register_strategy("head_twice")
    def head_twice(groups, rates, top, **_):
        return Plan("head_twice", True, (Phase("head", (), (), top, 1, cached=True),) * 2)
    try:
        plan = build_plan("head_twice", ("a", "b"))
        assert plan.strategy == "head_twice" and plan.phases[0].head_lr == 1e-4
    finally:
        del _REGISTRY["head_twice"]


# -- libraries where they give the same figures ----------------------------------------------
def _hooked_flops(backbone: Backbone) -> int:
    """The hand-written count count_flops replaced: forward hooks on Conv2d and Linear."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.in_features if isinstance(mod, nn.Linear) else int(np.prod(mod.weight.shape[1:]))
        total += 2 * out.numel() * k
    handles = [m.register_forward_hook(hook) for m in backbone.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        backbone.eval()(modalities.of(backbone).dummy_input(backbone.input_size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn", "tiny_cnn@block1", "tiny_text"])
def test_flop_counter_counts_what_the_hooks_counted(name):
    b = create_backbone(name, pretrained=False)
    if b.config.modality == "image":
        assert count_flops(b) == _hooked_flops(b)
    else:  # one more product: the pooling of windows into documents (a one-hot matmul)
        assert 0 < count_flops(b) - _hooked_flops(b) < 1e-4 * count_flops(b)


def test_metrics_equal_scikit_learns():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from headstart.evaluation.metrics import classification_report
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 7))
        y, p = rng.integers(0, k, 40), rng.integers(0, k, 40)
        r = classification_report(y, p, [str(i) for i in range(k)])
        P, R, F, S = precision_recall_fscore_support(y, p, labels=range(k), zero_division=0)
        assert r["confusion_matrix"] == confusion_matrix(y, p, labels=range(k)).tolist()
        got = np.array([[r["per_class"][str(i)][m] for m in ("precision", "recall", "f1")]
                        for i in range(k)])
        np.testing.assert_allclose(got, np.stack([P, R, F], 1), rtol=0, atol=1e-15)


def test_python_dash_m_headstart():
    p = subprocess.run([sys.executable, "-m", "headstart", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "train" in p.stdout and "compare" in p.stdout
