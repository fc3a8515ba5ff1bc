"""Reading and writing headstart's own files safely: one mechanism for each danger.

- `guarded(path, what, fix)`: every file headstart reads back from a run, a cache or a
  checkpoint is read inside it (through `read_json`, `read_yaml`, `read_safetensors`,
  `read_torch`). Whatever the damage (truncated, another format, a Python-object YAML tag, a
  pickle, unreadable, too large), the caller gets one error naming the file and the fix, never
  a traceback. Pickles are never executed: tensors come from safetensors, or from
  `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
- `atomic_write(path)`: write under a unique temporary sibling (process id + random), then
  rename into place; on failure the temporary file is removed. Two processes writing the same
  cache file never see each other's half, and never share a temporary name.
- `safe_name(text)`: a name that comes from the data (a label, a file name) as one harmless
  path component: no separators, no '..', no leading dot, no control characters, bounded
  length. Names that had to change get a short hash of the original, so distinct names stay
  distinct.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import unicodedata
import uuid
import warnings
from pathlib import Path

import yaml

from .exceptions import DamagedFileError, HeadstartError

MAX_META_BYTES = 64 * 2**20  # config.yaml, labels.json, metrics.json: far below this


# -- reading ---------------------------------------------------------------------------------
@contextlib.contextmanager
def guarded(path, what: str, fix: str, error: type[Exception] = DamagedFileError):
    """Turn any failure while reading `path` into `error("PATH: WHAT is damaged or unreadable
    (detail); FIX")`. headstart's own errors pass through unchanged."""
    try:
        with warnings.catch_warnings():  # a damaged file's warnings: the error says it all
            warnings.simplefilter("ignore")
            yield
    except HeadstartError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is the same user problem
        raise error(f"{path}: {what} is damaged or unreadable ({_detail(e)}); {fix}") from None


def _detail(e: Exception) -> str:
    if "Weights only load failed" in str(e):  # torch.load(weights_only=True) refused a pickle
        return ("it holds Python objects, not only tensors: not loaded, since unpickling them "
                "could run code")
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200] or 'no detail'}"


def read_bytes(path, *, what: str, fix: str, error=DamagedFileError,
               limit: int = MAX_META_BYTES) -> bytes:
    with guarded(path, what, fix, error):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size:,} bytes, more than the {limit:,} expected at most")
        return Path(path).read_bytes()


def read_json(path, *, what: str, fix: str, error=DamagedFileError, expect: type | None = None):
    raw = read_bytes(path, what=what, fix=fix, error=error)
    with guarded(path, what, fix, error):
        data = json.loads(raw.decode("utf-8"))
        _expect(data, expect)
        return data


def read_yaml(path, *, what: str, fix: str, error=DamagedFileError, expect: type | None = None):
    """YAML through safe_load: a Python-object tag (!!python/object) is refused, as damage."""
    raw = read_bytes(path, what=what, fix=fix, error=error)
    with guarded(path, what, fix, error):
        data = yaml.safe_load(raw.decode("utf-8"))
        _expect(data, expect)
        return data


def read_safetensors(path, *, what: str, fix: str, error=DamagedFileError) -> dict:
    with guarded(path, what, fix, error):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError("not a regular file")
        from safetensors.torch import load_file  # deferred on purpose: torch, for weights only
        return load_file(str(path))


def read_torch(path, *, what: str, fix: str, error=DamagedFileError):
    """torch.load with weights_only=True: tensors and plain containers, never code."""
    with guarded(path, what, fix, error):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError("not a regular file")
        import torch  # deferred on purpose: the readers of text files need no torch
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _expect(data, expect: type | None) -> None:
    if expect is not None and not isinstance(data, expect):
        raise ValueError(f"expected a {expect.__name__}, found a {type(data).__name__}")


# -- writing ---------------------------------------------------------------------------------
def unique_tmp(path: str | os.PathLike) -> Path:
    """A temporary sibling of `path` that no other process (or thread) will pick."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """`with atomic_write(p) as tmp: write tmp` -> p appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


# -- names from the data ---------------------------------------------------------------------
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
             *(f"LPT{i}" for i in range(10))}
NAME_BYTES = 100


def safe_name(text, *, limit: int = NAME_BYTES) -> str:
    """`text` as a single path component that stays inside its folder on every system."""
    original = str(text)
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", original)).strip(" .")
    if name.split(".")[0].upper() in _RESERVED:
        name = "_" + name
    if not name or name != original or len(name.encode()) > limit:
        digest = hashlib.blake2b(original.encode("utf-8", "surrogatepass"),
                                 digest_size=4).hexdigest()
        name = name.encode()[:limit - 9].decode("utf-8", "ignore").rstrip(" .")
        name = f"{name or 'x'}-{digest}"
    return name


def safe_join(root: str | os.PathLike, *names) -> Path:
    """root/<safe name>/... : a path built from data that cannot leave `root`."""
    out = Path(root)
    for n in names:
        out = out / safe_name(n)
    return out
