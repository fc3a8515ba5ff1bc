"""`headstart export` on the tiny backbones: the ONNX file and its sidecar, the parity check
(and its refusal), ONNX-backed predict/evaluate equal to PyTorch's, the int8 target, and the
estimator's export()."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from conftest import write_csv, write_folder
from headstart import TransferClassifier, api
from headstart.exceptions import ExportError
from headstart.export import exported_for, export_run
from headstart.export.runtime import ExportedModel
from headstart.modalities.image import ImageGraph


def _copy_run(src: Path, dst: Path) -> Path:
    """A private copy: exporting into the session's shared runs would change other tests."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def image_export(tmp_path_factory, tiny_runs):
    """The tiny fine_tune run, copied and exported once through the CLI."""
    from headstart.cli.main import main

    run = _copy_run(tiny_runs["fine_tune"], tmp_path_factory.mktemp("exp") / "ft")
    assert main(["export", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, articles):
    texts, labels = articles
    data = write_csv(tmp_path_factory.mktemp("texts") / "bbc.csv", texts, labels)
    run = tmp_path_factory.mktemp("truns") / "tt"
    api.train(data, run, config=api.TrainConfig(backbone="tiny_text", strategy="linear_probe"),
              progress=False, log=lambda *_: None)
    return run


def _torch_probs(run: Path, inputs: list) -> np.ndarray:
    """Probabilities from the run's PyTorch model, the export set aside."""
    trained = api.load(run)
    trained.run_dir = None  # no run directory: no export to find
    return api.predict_probs(trained, inputs)


def test_export_writes_model_and_sidecar(image_export, capsys):
    meta = json.loads((image_export / "model.json").read_text())
    assert (image_export / "model.onnx").is_file()
    assert meta["labels"] == json.loads((image_export / "labels.json").read_text())
    assert meta["input_size"] == 32 and meta["modality"] == "image"
    assert meta["normalisation"]["mean"] == [0.5, 0.5, 0.5]
    assert "shorter side to 32" in meta["resize"]["policy"]
    assert meta["headstart_version"] and meta["opset"] == 17
    p = meta["parity"]
    assert 0 <= p["max_abs_logit_diff"] <= p["tolerance"] == 1e-3
    assert "validation examples of the run" in p["inputs"] and p["examples"] >= 2
    assert p["top1_agree"] == p["examples"]
    assert not list(image_export.parent.glob(".*partial"))  # nothing half-written


def test_onnxruntime_alone_matches_headstart_predict(image_export, tmp_path):
    """The README's snippet: onnxruntime, Pillow and numpy only, resized as the sidecar says."""
    meta = json.loads((image_export / "model.json").read_text())
    src = write_folder(tmp_path / "probe", ("a", "b"), 2, seed=3)
    paths = sorted(str(p) for p in src.glob("*/*.png"))
    s = meta["input_size"]
    session = ort.InferenceSession(str(image_export / "model.onnx"))
    batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((s, s), Image.BICUBIC))
                      for p in paths])  # square images: resize == resize + centre crop
    probs = session.run(["probabilities"], {"images": batch})[0]
    ref = _torch_probs(image_export, paths)
    assert np.abs(probs - ref).max() < 1e-4
    assert (probs.argmax(1) == ref.argmax(1)).all()


def test_predict_and_evaluate_run_onnx_with_pytorch_results(image_export, tiny_data, cli,
                                                            monkeypatch):
    calls = []
    real = ExportedModel.predict_logits

    def spy(self, *a, **k):
        calls.append(self.path.name)
        return real(self, *a, **k)

    monkeypatch.setattr(ExportedModel, "predict_logits", spy)
    paths = sorted(str(p) for p in Path(tiny_data).glob("*/*.png"))
    got = api.predict_probs(api.load(image_export), paths)
    assert calls == ["model.onnx"]
    ref = _torch_probs(image_export, paths)
    assert np.abs(np.log(got) - np.log(ref)).max() < 1e-3  # log-probabilities: logits' gaps
    onnx_eval = cli("evaluate", image_export, tiny_data, "--json").json()
    assert calls == ["model.onnx"] * 2
    trained = api.load(image_export)
    trained.run_dir = None
    torch_eval, _ = api.evaluate(trained, tiny_data, progress=False)
    assert onnx_eval["accuracy"] == torch_eval["accuracy"]
    assert onnx_eval["confusion_matrix"] == torch_eval["confusion_matrix"]
    out = cli("predict", "--run", image_export, paths[0], "--json").json()
    assert out[0]["top"][0]["label"] == api.load(image_export).classes[int(ref[0].argmax())]


def test_stale_export_falls_back_to_pytorch(tmp_path, image_export, caplog):
    run = _copy_run(image_export, tmp_path / "stale")
    meta = json.loads((run / "model.json").read_text())
    meta["run"]["weights"] = "0" * 32
    (run / "model.json").write_text(json.dumps(meta))
    assert exported_for(run) is None
    assert "exported from other weights" in caplog.text


def test_parity_failure_refuses_and_leaves_nothing(tmp_path, tiny_runs, cli, monkeypatch):
    run = _copy_run(tiny_runs["linear_probe"], tmp_path / "lp")
    before = sorted(p.name for p in run.iterdir())
    forward = ImageGraph.forward

    def off_by_a_bit(self, images):  # a graph that disagrees with PyTorch by 0.01
        logits, _ = forward(self, images)
        logits = logits + 0.01
        return logits, torch.softmax(logits, 1)

    monkeypatch.setattr(ImageGraph, "forward", off_by_a_bit)
    line = cli("export", run).one_line_error()
    assert "parity check failed" in line and "above the tolerance 0.001" in line
    assert sorted(p.name for p in run.iterdir()) == before
    assert not list(tmp_path.glob(".*"))


def test_out_path_and_files_in_the_way(tmp_path, image_export, cli):
    out = tmp_path / "elsewhere" / "cats.onnx"
    assert cli("export", image_export, "--out", out).rc == 0
    assert out.is_file() and (out.parent / "cats.json").is_file()
    assert cli("export", image_export, "--out", out).rc == 0  # our own export: replaced
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's file")
    assert "is not a headstart export" in cli("export", image_export, "--out",
                                              mine).one_line_error()
    assert mine.read_bytes() == b"the user's file"
    assert "written to a .onnx file" in cli("export", image_export, "--out",
                                            tmp_path / "x.bin").one_line_error()
    assert "no such run directory" in cli("export", tmp_path / "nope").one_line_error()


def test_text_export_pools_windows_like_pytorch(text_run, cli):
    assert cli("export", text_run).rc == 0
    meta = json.loads((text_run / "model.json").read_text())
    tok = text_run / meta["text"]["tokenizer"]
    assert (tok / "tokenizer.json").is_file() or (tok / "vocab.txt").is_file()
    assert meta["parity"]["multi_window_texts"] >= 2  # long articles spanning windows
    assert meta["parity"]["max_abs_logit_diff"] <= 1e-3
    exported = ExportedModel(text_run / "model.onnx")
    long = "The central bank raised interest rates again. " * 60  # about 6 windows of 64
    texts = [long, "Shares fell.", "The striker scored twice in the final."]
    assert len(exported.inputs.windows([long])[0]) > 3
    got = exported.predict_logits(texts)[0]
    trained = api.load(text_run)
    from headstart.data.texts import TextDataset
    from headstart.training.predict import predict_logits
    ref = predict_logits(trained.model, TextDataset(texts, ["?"] * 3), trained.preprocess,
                         flip=False, progress=False)
    assert np.abs(got - ref).max() < 1e-4
    assert exported_for(text_run) is not None
    onnx = api.predict_probs(api.load(text_run), texts)
    assert np.abs(onnx - _torch_probs(text_run, texts)).max() < 1e-4


def test_export_carries_what_the_models_forward_does(tmp_path, tiny_runs):
    """The graph is traced through the model's own forward: a change to the head (such as a
    calibration temperature) is in the export without export code knowing of it."""
    trained = api.load(_copy_run(tiny_runs["linear_probe"], tmp_path / "lp"))

    class Halved(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.inner = head

        def forward(self, features):
            return self.inner(features) / 2.0

    plain = export_run(trained, tmp_path / "plain.onnx", log=lambda *_: None)
    trained.model.head = Halved(trained.model.head)
    halved = export_run(trained, tmp_path / "halved.onnx", log=lambda *_: None)
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    a = ExportedModel(plain.path).run(list(x))
    b = ExportedModel(halved.path).run(list(x))
    np.testing.assert_allclose(b, a / 2, atol=1e-5)


def test_int8_export_measures_drop_size_and_speed(tmp_path, tiny_runs, text_run):
    trained = api.load(_copy_run(tiny_runs["linear_probe"], tmp_path / "lp"))
    lines: list[str] = []
    result = export_run(trained, fmt="onnx-int8", heldout=40, log=lines.append)
    assert result.path.name == "model.int8.onnx" and result.sidecar.name == "model.int8.json"
    q = result.meta["quantization"]
    assert q["method"].startswith("static") and q["int8_bytes"] > 0 and q["fp32_bytes"] > 0
    assert set(q["ms_per_input"]) == {"fp32", "int8"}
    assert q["accuracy"] is None or 0 <= q["accuracy"]["int8"] <= 1
    assert result.meta["fp32_parity"]["max_abs_logit_diff"] <= 1e-3
    assert exported_for(trained.run_dir) is None  # predict keeps the fp32 export (none here)
    assert any(line.startswith("int8 (static") for line in lines)
    t = api.load(text_run)
    text = export_run(t, tmp_path / "t8.onnx", fmt="onnx-int8", heldout=10,
                      log=lambda *_: None)
    assert text.meta["quantization"]["method"].startswith("dynamic")
    exported = ExportedModel(text.path)
    probs = exported.run(exported.inputs.prepare(["Hello."]), output="probabilities")
    assert probs.shape == (1, len(t.classes)) and abs(probs.sum() - 1) < 1e-4


def test_estimator_export(tmp_path, make_folder):
    root = make_folder("est", n=5)
    paths = sorted(str(p) for p in root.glob("*/*.png"))
    labels = [Path(p).parent.name for p in paths]
    clf = TransferClassifier(backbone="tiny_cnn", strategy="linear_probe", input_size=32,
                             verbose=False).fit(paths, labels)
    with pytest.raises(ExportError, match="pass a path"):
        clf.export()
    out = clf.export(tmp_path / "mem.onnx")  # no run: parity on the shipped images
    assert "shipped animal-mnist" in json.loads(out.with_suffix(".json").read_text())[
        "parity"]["inputs"]
    before = clf.predict_proba(paths)
    clf.save(tmp_path / "run")
    assert clf.export() == tmp_path / "run" / "model.onnx"
    loaded = TransferClassifier.load(tmp_path / "run")
    assert exported_for(loaded.trained_.run_dir) is not None
    np.testing.assert_allclose(loaded.predict_proba(paths), before, atol=1e-4)


def test_int8_gate_refuses_a_real_drop_only():
    from headstart.export.quantize import _gate

    def report(fp32, int8, n):
        right = round(fp32 * n), round(int8 * n)
        return {"accuracy": {"fp32": fp32, "int8": int8, "drop": fp32 - int8, "on": "test",
                             "wrong_more": right[0] - right[1], "examples": n}}

    _gate(report(0.90, 0.89, 100), 0.02)  # within --max-drop
    _gate(report(0.90, 0.85, 20), 0.02)  # one example of 20: not a measured drop
    _gate({"accuracy": None}, 0.02)  # not measured: said so, not refused
    with pytest.raises(ExportError, match="more than --max-drop 0.02"):
        _gate(report(0.90, 0.80, 100), 0.02)


def test_text_export_with_several_pooled_layers(tmp_path, articles):
    """--layers 2: the features concatenate two layers' pooled outputs; the export carries it."""
    texts, labels = articles
    data = write_csv(tmp_path / "bbc.csv", texts, labels)
    trained = api.train(data, tmp_path / "run", config=api.TrainConfig(
        backbone="tiny_text", strategy="linear_probe", layers=2), progress=False,
        log=lambda *_: None)
    result = export_run(api.load(trained.run_dir), log=lambda *_: None)
    assert result.parity["max_abs_logit_diff"] <= 1e-3 and result.parity["multi_window_texts"]
