"""Package attributes imported on first use (PEP 562), so that `import headstart` and the
command line's `--help` stay free of torch until a name that needs it is read."""
from __future__ import annotations

import importlib
import sys


def attach(package: str, names: dict[str, str]):
    """`__getattr__` and `__dir__` for a package whose public `names` live in its submodules
    (name -> submodule, relative to the package): each is imported when first read."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
