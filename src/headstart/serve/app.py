"""The HTTP service: a run's ONNX export behind FastAPI, loaded once, micro-batched.

    GET  /         a web page: drop an image (or type a text), see the top classes as bars
    GET  /health   {"status": "ok", ...}
    GET  /model    labels, backbone, metrics, the export's parity figure, the limits
    POST /predict  image runs: multipart field `file`; text runs: JSON {"text": "..."} or
                   {"texts": [...]}; answers {"predictions": [{"label", "probability"}, ...]}
                   (for "texts": {"results": [{"predictions": [...]}, ...]}); ?top=K

Every error is JSON {"error": "one line"} with a 4xx status (a 5xx only for a timeout or a
fault of the service itself, never with a traceback).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..version import __version__
from ..exceptions import ExportError, ImageReadError
from ..export.runtime import MODEL_FILE, ExportedModel
from .batcher import MicroBatcher
from .limits import BodyLimit, ServeLimits

log = logging.getLogger("headstart.serve")


def resolve_model(run: str | Path) -> Path:
    """A run directory's export (RUN/model.onnx), or an .onnx file with its sidecar."""
    path = Path(run)
    if path.is_dir():
        path = path / MODEL_FILE
        if not path.is_file():
            raise ExportError(f"{run} has no ONNX export; run `headstart export {run}` first "
                              "(`headstart serve` exports by itself)")
    elif not path.exists():
        raise ExportError(f"{run}: no such run directory or exported .onnx file")
    elif path.suffix != ".onnx":
        raise ExportError(f"{run}: not a run directory or an exported .onnx file")
    return path


def _run_metrics(model_path: Path, meta: dict) -> dict:
    """The run's scalar metrics (metrics.json beside the export, else the sidecar's)."""
    try:
        metrics = json.loads((model_path.parent / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = meta.get("run", {}).get("metrics", {})
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float, str))}


def app(run: str | Path, *, limits: ServeLimits | None = None, token: str | None = None,
        threads: int | None = None) -> FastAPI:
    """The ASGI app serving `run` (a run directory with an export, or an .onnx file), to run
    with uvicorn or to mount in your own service."""
    limits = limits or ServeLimits()
    path = resolve_model(run)
    model = ExportedModel(path, threads=threads)
    batcher = MicroBatcher(lambda items: list(model.run(items, output="probabilities")),
                           max_batch=limits.max_batch, window_ms=limits.batch_window_ms)
    service = FastAPI(title=f"headstart: {path.parent.name}", version=__version__,
                      docs_url=None, redoc_url=None, openapi_url=None)
    service.state.model, service.state.batcher = model, batcher
    _errors(service)
    _routes(service, path, model, batcher, limits, token)
    service.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    return service


def _describe(path: Path, model: ExportedModel, limits: ServeLimits, token) -> dict:
    return {"labels": model.classes, "modality": model.modality.name,
            "backbone": model.meta.get("backbone"), "strategy": model.meta.get("strategy"),
            "input_size": model.input_size, "metrics": _run_metrics(path, model.meta),
            "export": {"file": path.name, "format": model.meta.get("format"),
                       "parity": model.meta.get("parity")},
            "limits": limits.to_dict(), "headstart_version": __version__,
            "token_required": token is not None}


def _routes(service: FastAPI, path: Path, model: ExportedModel, batcher: MicroBatcher,
            limits: ServeLimits, token: str | None) -> None:
    info = _describe(path, model, limits, token)
    page = resources.files("headstart.serve").joinpath("page.html").read_text(encoding="utf-8")

    def check_token(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong token: send the header "
                                "'Authorization: Bearer TOKEN' (the token given to --token)")

    @service.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @service.get("/health")
    async def health():
        return {"status": "ok", "model": path.name, "modality": model.modality.name,
                "input": model.modality.request,
                "token_required": token is not None, "batches": batcher.batches,
                "inputs": batcher.inputs}

    @service.get("/model")
    async def describe(request: Request):
        check_token(request)
        return info

    @service.post("/predict")
    async def predict(request: Request, top: int = 5):
        check_token(request)
        k = min(max(int(top), 1), len(model.classes))
        items, single = await READERS[model.modality.request](request, model, limits)
        rows = await _wait(asyncio.gather(*(batcher.submit(i) for i in items)), limits)
        results = [_top(r, model.classes, k) for r in rows]
        if single:
            return {"predictions": results[0]}
        return {"results": [{"predictions": r} for r in results]}


async def _text_items(request: Request, model: ExportedModel, limits: ServeLimits):
    """(the texts' windows, whether one "text" was sent) of a JSON request."""
    texts, single = _texts(await _json(request), limits)
    return await run_in_threadpool(model.inputs.prepare, texts), single


def _top(p: np.ndarray, names: list[str], k: int) -> list[dict]:
    order = np.argsort(-p)[:k]
    return [{"label": names[i], "probability": round(float(p[i]), 6)} for i in order]


async def _wait(awaitable, limits: ServeLimits):
    try:
        return await asyncio.wait_for(awaitable, limits.timeout_s)
    except asyncio.TimeoutError:
        raise HTTPException(503, f"the model did not answer within {limits.timeout_s:g} s; "
                            "the service is overloaded, try again") from None


async def _json(request: Request):
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(415, 'this is a text model: send JSON {"text": "..."} or '
                            '{"texts": ["...", ...]} with Content-Type: application/json')
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the request body is not valid JSON") from None


def _texts(body, limits: ServeLimits) -> tuple[list[str], bool]:
    """The texts of a request, checked: (texts, whether one "text" was sent)."""
    if not isinstance(body, dict) or ("text" in body) == ("texts" in body):
        raise HTTPException(422, 'send a JSON object with either "text": "..." or '
                            '"texts": ["...", ...]')
    single = "text" in body
    texts = [body["text"]] if single else body["texts"]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise HTTPException(422, '"texts" must be a non-empty list of strings' if not single
                            else '"text" must be a string')
    if len(texts) > limits.max_texts:
        raise HTTPException(413, f"{len(texts)} texts in one request, over the limit of "
                            f"{limits.max_texts}; send them in several requests")
    for i, t in enumerate(texts):
        if not t.strip():
            raise HTTPException(422, f"text {i + 1} is empty; send some words")
        if len(t) > limits.max_text_chars:
            raise HTTPException(413, f"text {i + 1} has {len(t):,} characters, over the limit "
                                f"of {limits.max_text_chars:,}")
    return texts, single


async def _file_item(request: Request, model: ExportedModel, limits: ServeLimits):
    """([the uploaded file as an input], True) of a multipart request."""
    return [await _upload(request, model, limits)], True


async def _upload(request: Request, model: ExportedModel, limits: ServeLimits):
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "this is an image model: upload the image as multipart form "
                            "field 'file' (curl -F file=@cat.jpg URL/predict)")
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as e:  # noqa: BLE001 - python-multipart's parse errors
        raise HTTPException(400, f"cannot parse the multipart form ({e})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, "no file in the form field 'file'; send the image as "
                            "-F file=@image.jpg")
    data = await upload.read()
    name = upload.filename or "upload"
    _check_pixels(data, name, limits.max_pixels)
    try:
        return await run_in_threadpool(model.inputs.decode, data, name,
                                       max_pixels=limits.max_pixels)
    except ImageReadError as e:
        raise HTTPException(422, f"{name}: {e.reason}") from None


# how a request carries its inputs, by what the modality says it sends (Modality.request)
READERS = {"file": _file_item, "texts": _text_items}


def _check_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """413 for an image whose header declares more pixels than allowed (before decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Exception:  # noqa: BLE001 - not an image: decoding says so with a 422
        return
    if w * h > max_pixels:
        raise HTTPException(413, f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of "
                            f"{max_pixels:,}; send a smaller image")


def _errors(service: FastAPI) -> None:
    """One JSON shape for every error; tracebacks go to the server's log only."""

    @service.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = exc.detail if exc.status_code not in (404, 405) else \
            f"{exc.detail.lower()}: {request.method} {request.url.path}"
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)

    @service.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"},
                            status_code=422)

    @service.exception_handler(Exception)
    async def fault(request, exc: Exception):
        log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the "
                             "server's log"}, status_code=500)
