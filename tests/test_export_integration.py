"""Export and serve on the real shipped backbones at reduced sizes: EfficientNet-Lite0 (64 px)
on animal-mnist images and MiniLM-L6 on BBC News articles; the web page in headless
Chromium (skipped without it unless HEADSTART_REQUIRE_BROWSER=1)."""
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cdp_browser import Browser, chromium_or_skip
from conftest import write_csv
from headstart import api
from headstart.export import export_run, exported_for
from headstart.export.runtime import ExportedModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def animals(tmp_path_factory):
    """animal-mnist, 5 training images per class, and 8 per class of its hold-out."""
    pytest.importorskip("animal_mnist", reason="pip install --no-deps animal-mnist==0.4")
    from headstart.data.shipped import write_animal_mnist

    root = write_animal_mnist(tmp_path_factory.mktemp("am") / "am", per_class=5)
    test = root.parent / "test-slice"
    for d in sorted((root / "test").iterdir()):
        (test / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:8]:
            shutil.copy(f, test / d.name / f.name)
    return root / "train", test


@pytest.fixture(scope="module")
def lite0_run(animals, tmp_path_factory, cli_main):
    out = tmp_path_factory.mktemp("lite0") / "probe"
    assert cli_main(["train", str(animals[0]), "--out", str(out), "--strategy", "linear_probe",
                     "--image-size", "64", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def minilm_run(articles, tmp_path_factory):
    texts, labels = articles
    data = write_csv(tmp_path_factory.mktemp("mini") / "bbc.csv", texts, labels)
    out = tmp_path_factory.mktemp("mini-runs") / "probe"
    api.train(data, out, config=api.TrainConfig(strategy="linear_probe"), progress=False,
              log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def cli_main():
    from headstart.cli.main import main
    return main


def _pytorch(run: Path):
    trained = api.load(run)
    trained.run_dir = None  # no run directory, no export: the PyTorch model
    return trained


def test_lite0_export_parity_and_onnx_backed_predict_and_evaluate(lite0_run, animals, cli):
    res = cli("export", lite0_run)
    assert res.rc == 0, res
    assert "parity with PyTorch on 10 inputs (10 validation examples of the run" in res.out
    meta = json.loads((lite0_run / "model.json").read_text())
    assert meta["parity"]["max_abs_logit_diff"] <= 1e-3
    assert meta["inputs"]["images"] == "uint8 (batch, 64, 64, 3), RGB, NHWC"
    assert meta["normalisation"]["mean"] == pytest.approx([127 / 255] * 3)
    test = animals[1]
    paths = sorted(str(p) for p in test.glob("*/*.png"))[::4]
    assert exported_for(lite0_run) is not None
    onnx = api.predict_probs(api.load(lite0_run), paths)
    torch_probs = api.predict_probs(_pytorch(lite0_run), paths)
    assert np.abs(onnx - torch_probs).max() < 1e-4
    onnx_report = cli("evaluate", lite0_run, test, "--json").json()
    torch_report, _ = api.evaluate(_pytorch(lite0_run), test, progress=False)
    assert onnx_report["confusion_matrix"] == torch_report["confusion_matrix"]
    assert onnx_report["accuracy"] > 0.3  # 5 images per class at 64 px; chance is 0.1


def test_lite0_int8_accuracy_drop_size_and_speed(lite0_run, animals, tmp_path):
    lines: list[str] = []
    result = export_run(api.load(lite0_run), tmp_path / "lite0.int8.onnx", fmt="onnx-int8",
                        test=animals[1], max_drop=1.0, log=lines.append)
    q = result.meta["quantization"]
    assert q["int8_bytes"] < q["fp32_bytes"] / 2
    acc = q["accuracy"]
    assert acc["examples"] == 80 and "test-slice" in acc["on"]
    fp32_report, _ = api.evaluate(api.load(lite0_run), animals[1], progress=False)
    assert acc["fp32"] == fp32_report["accuracy"]  # the fp32 export, measured the same way
    int8 = ExportedModel(result.path)
    paths = sorted(str(p) for p in animals[1].glob("*/*.png"))
    pred = int8.predict_logits(paths)[0].argmax(1)
    y = [int8.classes.index(Path(p).parent.name) for p in paths]
    assert acc["int8"] == float(np.mean(pred == np.array(y)))
    assert acc["drop"] == pytest.approx(acc["fp32"] - acc["int8"])
    assert any("accuracy" in line and "fp32 on 80 labelled examples" in line for line in lines)


def test_minilm_export_pools_long_articles_like_pytorch(minilm_run, cli):
    res = cli("export", minilm_run)
    assert res.rc == 0, res
    assert "2 shipped BBC articles longer than one window" in res.out
    meta = json.loads((minilm_run / "model.json").read_text())
    assert meta["parity"]["max_abs_logit_diff"] <= 1e-3
    assert meta["parity"]["multi_window_texts"] >= 2 and meta["text"]["window"] == 256
    from headstart.data.shipped import bbc_split, load_bbc_news
    texts, labels, _ = load_bbc_news()
    _, test = bbc_split(texts, labels)
    exported = ExportedModel(minilm_run / "model.onnx")
    sample = [texts[i] for i in test[:12]]
    assert max(len(w) for w in exported.inputs.windows(sample)) >= 2
    onnx = api.predict_probs(api.load(minilm_run), sample)
    assert np.abs(onnx - api.predict_probs(_pytorch(minilm_run), sample)).max() < 1e-4
    expected = [labels[i] for i in test[:12]]
    got = [api.load(minilm_run).classes[i] for i in onnx.argmax(1)]
    assert np.mean(np.array(got) == np.array(expected)) >= 0.75


@contextlib.contextmanager
def serving(asgi):
    """The app under uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_web_page_in_chromium_shows_the_top_class_of_a_real_image(lite0_run, animals, tmp_path):
    from headstart.serve import app

    binary = chromium_or_skip()
    if exported_for(lite0_run) is None:
        export_run(api.load(lite0_run), log=lambda *_: None)
    image = sorted((animals[1] / "elephant").glob("*.png"))[0]
    expected = api.predict(api.load(lite0_run), [str(image)], top=1)[0][0]
    browser = Browser(binary)
    try:
        with serving(app(lite0_run)) as url:
            browser.navigate(url)
            browser.wait_for("document.getElementById('title').textContent.includes('classes')")
            browser.set_files("#file", [str(image.resolve())])
            label = browser.wait_for("document.querySelector('#results .label')?.textContent")
            prob = browser.evaluate("document.querySelector('#results .prob').textContent")
            bars = browser.evaluate("document.querySelectorAll('#results .row').length")
            browser.screenshot(str(tmp_path / "page.png"))
    finally:
        browser.close()
    assert label == expected[0]
    assert prob == f"{100 * expected[1]:.1f}%" and bars == 5


def test_web_page_in_chromium_classifies_a_typed_text(minilm_run):
    from headstart.serve import app

    binary = chromium_or_skip()
    if exported_for(minilm_run) is None:
        export_run(api.load(minilm_run), log=lambda *_: None)
    text = "The striker scored twice as the champions won the cup final at Wembley."
    expected = api.predict(api.load(minilm_run), [text], top=1)[0][0][0]
    browser = Browser(binary)
    try:
        with serving(app(minilm_run)) as url:
            browser.navigate(url)
            browser.wait_for("!document.getElementById('text-ui').hidden")
            browser.evaluate(f"document.getElementById('text').value = {json.dumps(text)}")
            browser.evaluate("document.getElementById('go').click()")
            label = browser.wait_for("document.querySelector('#results .label')?.textContent")
    finally:
        browser.close()
    assert label == expected == "sports"
