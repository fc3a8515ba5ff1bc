"""The feature cache: a second pass over the same images is served from it; a changed file, and
only that file, is read and run through the backbone again."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headstart import TrainConfig, api, create_backbone
from headstart.data import Preprocess
from headstart.modalities import load_dataset
from headstart.training import FeatureCache, FeatureExtractor
from headstart.modalities import image as extract_mod  # where images are decoded
from headstart.training.extract import extract_features


@pytest.fixture
def decoded(monkeypatch):
    """The list of sources that extract_features decodes (opens as pixels)."""
    seen = []
    original = extract_mod.open_image

    def spy(source, **kw):
        seen.append(str(source))
        return original(source, **kw)
    monkeypatch.setattr(extract_mod, "open_image", spy)
    return seen


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(create_backbone("tiny_cnn"))


def _pre():
    return Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_second_pass_comes_from_cache(make_folder, tmp_path, extractor, decoded):
    ds = load_dataset(make_folder(n=5))
    cache = FeatureCache(tmp_path / "features.sqlite")
    first = extract_features(ds, extractor, _pre(), views=2, cache=cache, progress=False)
    assert first.from_cache == 0 and len(decoded) == 10
    assert first.features.shape == (10, 2, 32) and first.kept == list(range(10))
    decoded.clear()
    second = extract_features(ds, extractor, _pre(), views=2, cache=cache, progress=False)
    assert second.from_cache == 10 and decoded == []
    np.testing.assert_allclose(second.features, first.features, rtol=1e-6)
    cache.close()


def test_changed_file_is_the_only_one_read_again(make_folder, tmp_path, extractor, decoded):
    data = make_folder(n=4)
    ds = load_dataset(data)
    cache = FeatureCache(tmp_path / "features.sqlite")
    first = extract_features(ds, extractor, _pre(), cache=cache, progress=False)
    target = data / "b" / "2.png"
    Image.fromarray(np.full((36, 36, 3), 255, np.uint8)).save(target)
    decoded.clear()
    again = extract_features(ds, extractor, _pre(), cache=cache, progress=False)
    assert again.from_cache == 7
    assert decoded == [str(target)]
    i = ds.sources.index(str(target))
    assert not np.allclose(again.features[i], first.features[i])
    others = [j for j in range(8) if j != i]
    np.testing.assert_allclose(again.features[others], first.features[others], rtol=1e-6)


def test_cache_is_keyed_by_preprocessing_and_weights(make_folder, tmp_path, extractor):
    ds = load_dataset(make_folder(n=2))
    cache = FeatureCache(tmp_path / "features.sqlite")
    extract_features(ds, extractor, _pre(), cache=cache, progress=False)
    other_norm = Preprocess(32, (0.4, 0.4, 0.4), (0.5, 0.5, 0.5))
    assert extract_features(ds, extractor, other_norm, cache=cache,
                            progress=False).from_cache == 0
    import torch
    torch.manual_seed(3)
    other_weights = FeatureExtractor(create_backbone("tiny_cnn", pretrained=False))
    assert extract_features(ds, other_weights, _pre(), cache=cache,
                            progress=False).from_cache == 0


@pytest.mark.parametrize("cut, passes", [("none", 1), ("auto", 2)])
def test_second_linear_probe_run_decodes_nothing(make_folder, tmp_path, decoded, cut, passes):
    """The first run reads every image once (and once more to measure the cuts, on data this
    small a sample of everything); the second reads none: every feature is cached."""
    data = make_folder(n=5)
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32, cut=cut)
    first = api.train(data, tmp_path / "r1", config=cfg, progress=False, log=lambda *_: None)
    assert len(decoded) == 10 * passes
    decoded.clear()
    second = api.train(data, tmp_path / "r2", config=cfg, progress=False, log=lambda *_: None)
    assert decoded == []
    assert second.metrics["val_accuracy"] == first.metrics["val_accuracy"]



def test_a_first_run_exports_one_graph_whose_whole_output_is_the_networks(make_folder, tmp_path,
                                                                          decoded, monkeypatch):
    """Measuring the cuts exports the network with its cuts tapped; where the whole network is
    kept, the run's pass uses that graph's last output (no second export) and caches it under
    the whole network's key: the numbers its own graph gives, so a run without cuts reads
    them all back."""
    from headstart.cache import cache_dir
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))  # an empty cache
    data = make_folder(n=6)
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32, cut="auto")
    first = api.train(data, tmp_path / "r1", config=cfg, progress=False, log=lambda *_: None)
    assert first.config.backbone == "tiny_cnn"  # the whole network kept
    graphs = sorted(p.name for p in (cache_dir() / "onnx").glob("*.onnx"))
    assert len(graphs) == 1 and "block1" in graphs[0], graphs
    ds = load_dataset(data)
    own = extract_features(ds, FeatureExtractor(create_backbone("tiny_cnn", image_size=32)),
                           first.preprocess, views=2, progress=False)  # its own graph, no cache
    cached = extract_features(ds, FeatureExtractor(create_backbone("tiny_cnn", image_size=32)),
                              first.preprocess, views=2, cache=FeatureCache(), progress=False)
    assert cached.from_cache == len(ds)
    np.testing.assert_array_equal(cached.features, own.features)
    decoded.clear()
    api.train(data, tmp_path / "r2", config=TrainConfig(**{**cfg.__dict__, "cut": "none"}),
              progress=False, log=lambda *_: None)
    assert decoded == []
    sessions = []  # a warm run measuring the cuts again loads no graph at all
    original = FeatureExtractor._onnx_session
    monkeypatch.setattr(FeatureExtractor, "_onnx_session",
                        lambda self, **kw: sessions.append(self) or original(self, **kw))
    api.train(data, tmp_path / "r3", config=cfg, progress=False, log=lambda *_: None)
    assert decoded == [] and sessions == []



def test_a_measurement_read_from_the_cache_still_hands_its_graph_to_the_run(
        make_folder, tmp_path, monkeypatch, caplog):
    """Where every input the cuts were measured on comes from the cache, the tapped graph is
    first loaded by the run's pass, for the views the cache lacks (here the flipped ones): it
    loads and passes its check against the tapped network (found after `rank`, whose pass had
    cached the measurement's features: the check ran the network without its taps, 1552
    features against 1280, and the run fell back to eager PyTorch with a warning)."""
    import logging
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    data = make_folder(n=6)
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32, cut="auto",
                      flip=False)
    api.train(data, tmp_path / "r1", config=cfg, progress=False, log=lambda *_: None)
    sessions = []
    original = FeatureExtractor._onnx_session
    monkeypatch.setattr(FeatureExtractor, "_onnx_session",
                        lambda self, **kw: sessions.append(original(self, **kw)) or sessions[-1])
    with caplog.at_level(logging.WARNING, logger="headstart"):
        run = api.train(data, tmp_path / "r2", config=TrainConfig(**{**cfg.__dict__,
                                                                     "flip": True}),
                        progress=False, log=lambda *_: None)
    assert not [r for r in caplog.records if "ONNX Runtime unavailable" in r.getMessage()], \
        caplog.text
    assert len(sessions) == 1 and sessions[0] is not None, sessions
    ds = load_dataset(data)
    own = extract_features(ds, FeatureExtractor(create_backbone("tiny_cnn", image_size=32)),
                           run.preprocess, views=2, progress=False)
    cached = extract_features(ds, FeatureExtractor(create_backbone("tiny_cnn", image_size=32)),
                              run.preprocess, views=2, cache=FeatureCache(), progress=False)
    assert cached.from_cache == len(ds)
    np.testing.assert_array_equal(cached.features, own.features)


def test_without_onnx_runtime_the_measured_run_computes_in_pytorch(make_folder, tmp_path,
                                                                   monkeypatch):
    """Where no ONNX graph loads, a run that measured its cuts still caches the whole
    network's features, the ones PyTorch gives."""
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(FeatureExtractor, "_onnx_session", lambda self, **kw: None)
    data = make_folder(n=6)
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32, cut="auto")
    run = api.train(data, tmp_path / "r", config=cfg, progress=False, log=lambda *_: None)
    ds = load_dataset(data)
    torch_path = FeatureExtractor(create_backbone("tiny_cnn", image_size=32), engine="torch")
    cached = extract_features(ds, torch_path, run.preprocess, views=2, cache=FeatureCache(),
                              progress=False)
    ref = extract_features(ds, torch_path, run.preprocess, views=2, progress=False)
    assert cached.from_cache == len(ds) and cached.features.shape[-1] == 32
    np.testing.assert_allclose(cached.features, ref.features, rtol=1e-5, atol=1e-6)


def test_skip_bad_without_cache(make_folder, extractor):
    data = make_folder(n=3)
    bad = data / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])
    ds = load_dataset(data)
    ex = extract_features(ds, extractor, _pre(), skip_bad=True, progress=False)
    assert len(ex.kept) == 5 and ds.sources.index(str(bad)) not in ex.kept
    assert len(ex.skipped) == 1 and str(bad) in ex.skipped[0]
    assert ex.features.shape[0] == 5
