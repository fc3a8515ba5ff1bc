"""Serve an exported run over HTTP: `headstart.serve.app(run)` is the ASGI app (FastAPI) that
`headstart serve` runs with uvicorn. Names are imported when first read (_lazy.py): the
command's options need only the limits, not FastAPI or torch."""
import sys
import types

from .._lazy import attach

__getattr__, __dir__ = attach(__name__, {"app": "app", "resolve_model": "app",
                                         "ServeLimits": "limits"})


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # loading the submodule app.py binds it here as `app`; the package's `app` is the
        # function of that name, as it was when this file imported it eagerly
        if name == "app" and isinstance(value, types.ModuleType):
            value = value.app
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["app", "resolve_model", "ServeLimits"]
