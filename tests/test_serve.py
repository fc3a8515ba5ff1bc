"""The HTTP service through the ASGI test client: predictions on real images and texts, every
kind of bad request answered with a 4xx and one line of JSON, the token, the timeout,
micro-batching, and `headstart serve`'s own checks."""
from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import write_csv
from headstart import api
from headstart.exceptions import ExportError
from headstart.export import export_run
from headstart.serve import ServeLimits, app
from headstart.serve.batcher import MicroBatcher


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, tiny_runs):
    run = tmp_path_factory.mktemp("serve") / "ft"
    shutil.copytree(tiny_runs["fine_tune"], run)
    export_run(api.load(run), log=lambda *_: None)
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, articles):
    texts, labels = articles
    data = write_csv(tmp_path_factory.mktemp("serve-texts") / "bbc.csv", texts, labels)
    run = tmp_path_factory.mktemp("serve-truns") / "tt"
    trained = api.train(data, run, config=api.TrainConfig(backbone="tiny_text",
                                                          strategy="linear_probe"),
                        progress=False, log=lambda *_: None)
    export_run(api.load(trained.run_dir), log=lambda *_: None)
    return run


@pytest.fixture
def image_client(image_run):
    return TestClient(app(image_run))


def png_bytes(size=(36, 36), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3)).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def assert_json_error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and body["error"]
    assert "Traceback" not in r.text
    return body["error"]


def test_health_model_and_page(image_client, image_run):
    assert image_client.get("/health").json()["status"] == "ok"
    info = image_client.get("/model").json()
    assert info["labels"] == api.load(image_run).classes
    assert info["backbone"] == "tiny_cnn" and info["modality"] == "image"
    assert info["metrics"]["val_accuracy"] is not None
    assert info["export"]["parity"]["max_abs_logit_diff"] <= 1e-3
    page = image_client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text


def test_predict_image_matches_headstart_predict(image_client, image_run, tiny_data):
    path = sorted(Path(tiny_data).glob("a/*.png"))[0]
    r = image_client.post("/predict?top=2", files={"file": ("a.png", path.read_bytes(),
                                                            "image/png")})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
    expected = api.predict(api.load(image_run), [str(path)], top=2)[0]
    assert [p["label"] for p in preds] == [n for n, _ in expected]
    assert abs(preds[0]["probability"] - expected[0][1]) < 1e-4


@pytest.mark.parametrize("data, status, words", [
    (b"", 422, "empty"),
    (b"this is not an image", 422, "not an image"),
    (png_bytes()[:60], 422, "corrupt or truncated"),
])
def test_bad_uploads_get_4xx_json(image_client, data, status, words):
    r = image_client.post("/predict", files={"file": ("bad.png", data, "image/png")})
    assert words in assert_json_error(r, status)


def test_wrong_requests_get_4xx_json(image_client):
    assert "multipart" in assert_json_error(image_client.post("/predict", json={"text": "x"}),
                                            415)
    r = image_client.post("/predict", files={"other": ("a.png", png_bytes(), "image/png")})
    assert "field 'file'" in assert_json_error(r, 422)
    r = image_client.post("/predict?top=many", files={"file": ("a.png", png_bytes())})
    assert "top" in assert_json_error(r, 422)
    assert "not found" in assert_json_error(image_client.get("/nothing"), 404)
    assert_json_error(image_client.get("/predict"), 405)


def test_size_and_pixel_limits(image_run):
    client = TestClient(app(image_run, limits=ServeLimits(max_request_bytes=20_000,
                                                          max_pixels=100 * 100)))
    big = png_bytes((120, 120))
    assert len(big) > 20_000
    assert "over the limit" in assert_json_error(client.post("/predict", files={
        "file": ("big.png", big)}), 413)
    many = png_bytes((150, 150), seed=1)[:0] + _flat_png(150, 150)  # small file, many pixels
    assert len(many) < 20_000
    msg = assert_json_error(client.post("/predict", files={"file": ("bomb.png", many)}), 413)
    assert "22,500 pixels" in msg
    ok = client.post("/predict", files={"file": ("ok.png", _flat_png(60, 60))})
    assert ok.status_code == 200


def _flat_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def test_chunked_body_over_the_limit_is_refused(image_run):
    client = TestClient(app(image_run, limits=ServeLimits(max_request_bytes=1_000)))

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert_json_error(r, 413)


def test_token(image_run):
    client = TestClient(app(image_run, token="s3cret"))
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200
    assert "Bearer" in assert_json_error(client.get("/model"), 401)
    assert_json_error(client.get("/model", headers={"Authorization": "Bearer wrong"}), 401)
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/model", headers=good).status_code == 200
    r = client.post("/predict", files={"file": ("a.png", png_bytes())}, headers=good)
    assert r.status_code == 200


def test_timeout_and_internal_errors_are_json(image_run):
    service = app(image_run, limits=ServeLimits(timeout_s=0.05))
    client = TestClient(service, raise_server_exceptions=False)  # answer as uvicorn would
    real = service.state.batcher.run

    def slow(items):
        import time
        time.sleep(0.5)
        return real(items)

    service.state.batcher.run = slow
    r = client.post("/predict", files={"file": ("a.png", png_bytes())})
    assert "did not answer within 0.05 s" in assert_json_error(r, 503)

    def broken(items):
        raise RuntimeError("boom")

    service.state.batcher.run = broken
    r = client.post("/predict", files={"file": ("a.png", png_bytes())})
    assert "internal error (RuntimeError)" in assert_json_error(r, 500)


def _concurrent(service, n: int) -> list[dict]:
    async def go():
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rs = await asyncio.gather(*(c.post("/predict", files={
                "file": ("a.png", png_bytes(seed=i))}) for i in range(n)))
        return [r.json() for r in rs]
    return asyncio.run(go())


def test_concurrent_requests_are_micro_batched(image_run):
    batched = app(image_run, limits=ServeLimits(max_batch=8, batch_window_ms=200))
    one_by_one = app(image_run, limits=ServeLimits(max_batch=1))
    a, b = _concurrent(batched, 8), _concurrent(one_by_one, 8)
    assert batched.state.batcher.inputs == 8 and batched.state.batcher.batches < 8
    assert one_by_one.state.batcher.batches == 8
    for x, y in zip(a, b):
        assert [p["label"] for p in x["predictions"]] == [p["label"] for p in y["predictions"]]
        assert abs(x["predictions"][0]["probability"] - y["predictions"][0]["probability"]) < 1e-5


def test_batcher_drops_inputs_whose_request_gave_up():
    seen = []

    def run(items):
        seen.extend(items)
        return items

    async def go():
        b = MicroBatcher(run, max_batch=4, window_ms=50)
        task = asyncio.ensure_future(b.submit("late"))
        await asyncio.sleep(0)
        task.cancel()
        return await b.submit("kept")
    assert asyncio.run(go()) == "kept" and seen == ["kept"]


def test_text_predictions_and_bad_texts(text_run):
    client = TestClient(app(text_run, limits=ServeLimits(max_text_chars=2_000, max_texts=3)))
    long = "Shares in the bank rose after strong results. " * 30
    r = client.post("/predict", json={"text": long})
    assert r.status_code == 200, r.text
    expected = api.predict(api.load(text_run), [long], top=5)[0]
    assert [p["label"] for p in r.json()["predictions"]] == [n for n, _ in expected]
    r = client.post("/predict", json={"texts": ["The match ended 2-1.", long]})
    assert [len(x["predictions"]) for x in r.json()["results"]] == [5, 5]
    assert "empty" in assert_json_error(client.post("/predict", json={"text": "  "}), 422)
    assert "over the limit" in assert_json_error(client.post("/predict", json={
        "text": "x" * 2_001}), 413)
    assert "limit of 3" in assert_json_error(client.post("/predict", json={
        "texts": ["a"] * 4}), 413)
    assert_json_error(client.post("/predict", json={"texts": "not a list"}), 422)
    assert_json_error(client.post("/predict", json=["a list"]), 422)
    assert_json_error(client.post("/predict", json={"text": "a", "texts": ["b"]}), 422)
    assert "not valid JSON" in assert_json_error(client.post(
        "/predict", content=b"{nope", headers={"content-type": "application/json"}), 400)
    assert "text model" in assert_json_error(client.post("/predict", files={
        "file": ("a.png", png_bytes())}), 415)


def test_app_needs_an_export(tmp_path, tiny_runs):
    run = tmp_path / "plain"
    shutil.copytree(tiny_runs["linear_probe"], run)
    with pytest.raises(ExportError, match="headstart export"):
        app(run)
    with pytest.raises(ExportError, match="no such run directory"):
        app(tmp_path / "missing.onnx")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ExportError, match="not a run directory"):
        app(tmp_path / "notes.txt")


def test_serve_command_exports_first_and_warns_off_localhost(tmp_path, tiny_runs, cli,
                                                             monkeypatch):
    import uvicorn

    run = tmp_path / "lp"
    shutil.copytree(tiny_runs["linear_probe"], run)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda service, **kw: started.append(kw))
    res = cli("serve", run)
    assert res.rc == 0 and "exporting it first" in res.out and (run / "model.onnx").is_file()
    assert started[-1]["host"] == "127.0.0.1" and "warning" not in res.err
    assert "http://127.0.0.1:8000/" in res.out
    res = cli("serve", run, "--host", "0.0.0.0", "--port", "8123", "--max-batch", "1")
    assert res.rc == 0 and "exporting" not in res.out
    assert "warning: --host 0.0.0.0 serves the model to every machine" in res.err
    assert "no token is required" in res.err and "micro-batching off" in res.out
    assert started[-1]["port"] == 8123
    res = cli("serve", run, "--host", "0.0.0.0", "--token", "t")
    assert "a token is required" in res.err
    assert "no such run directory" in cli("serve", tmp_path / "nope").one_line_error()
