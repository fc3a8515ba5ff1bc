"""What one request may cost the service, and the ASGI guard on request size."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServeLimits:
    max_request_bytes: int = 10 * 2**20  # a whole request body
    max_pixels: int = 40_000_000  # decoded image size (decompression bombs)
    max_text_chars: int = 100_000  # one text
    max_texts: int = 64  # texts in one request
    timeout_s: float = 30.0  # waiting for the model, per request
    max_batch: int = 16  # micro-batching: inputs per model run (1: off)
    batch_window_ms: float = 1.0  # micro-batching: how long a lone input waits for others

    def to_dict(self) -> dict:
        return asdict(self)


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, before the app reads them: by the
    declared Content-Length, and by counting a body sent without one (chunked)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = (f"request body over the limit of {self.max_bytes:,} bytes; send a smaller "
                   "image or fewer texts")
        try:
            if declared is not None and int(declared) > self.max_bytes:
                return await send_error(send, 413, too_big)
        except ValueError:
            return await send_error(send, 400, "Content-Length is not a number")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await send_error(send, 413, too_big)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
