"""Serve an exported run over HTTP: `headstart.serve.app(run)` is the ASGI app (FastAPI) that
`headstart serve` runs with uvicorn."""
from .app import app, resolve_model
from .limits import ServeLimits

__all__ = ["app", "resolve_model", "ServeLimits"]
