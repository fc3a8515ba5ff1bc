"""Where headstart keeps what it can compute again: features, ONNX graphs of frozen backbones,
downloads, demo datasets. `$HEADSTART_CACHE`, else `$XDG_CACHE_HOME/headstart` (default
`~/.cache/headstart`)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("HEADSTART_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "headstart")
    return Path(root)
