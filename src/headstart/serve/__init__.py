"""Serve an exported run over HTTP: `headstart.serve.app(run)` is the ASGI app (FastAPI) that
`headstart serve` runs with uvicorn. Names are imported when first read (_lazy.py): the
command's options need only the limits, not FastAPI or torch."""
from .._lazy import attach

__getattr__, __dir__ = attach(__name__, {"app": "app", "resolve_model": "app",
                                         "ServeLimits": "limits"})

__all__ = ["app", "resolve_model", "ServeLimits"]
