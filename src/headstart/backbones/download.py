"""Downloading weights (`--weights https://...`, `file://...`, `hf://owner/repo[/file][@rev]`)
into the cache, verified.

- A size cap (HEADSTART_MAX_DOWNLOAD_MB, default 4096): refused before reading when the server
  says the size, and cut off when the bytes run past it.
- A checksum whenever the source gives one: `#sha256=HEX` at the end of the URL (pip's
  notation), a `Digest`/`Repr-Digest: sha-256=...` header, or the Hugging Face hub's
  `X-Linked-Etag` (the sha256 of an LFS file). hf:// goes through huggingface_hub's own
  download, then the file is checked against the hub's ETag (sha256 for LFS files, the git
  blob hash for small ones).
- A size check against Content-Length, so a cut connection is never taken for a file.
- A cached file is verified on every reuse (against the hash recorded when it was downloaded,
  and the checksum asked for); a file that fails is downloaded again.
- Temporary files are unique (pid + random) and removed on any failure.

http(s):// and file:// go through urllib, not huggingface_hub: the hub's client downloads only
from a hub, and the cap and the checksum must act while the bytes arrive.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from ..cache import cache_dir
from ..exceptions import WeightsError
from ..safeio import atomic_write, safe_name, write_bytes_atomic

log = logging.getLogger("headstart")
SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20
OFFLINE = ("when offline, download the file elsewhere and pass its local path to --weights")


def max_bytes() -> int:
    try:
        return int(float(os.environ.get("HEADSTART_MAX_DOWNLOAD_MB", "4096")) * 2**20)
    except ValueError:
        return 4096 * 2**20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def split_checksum(url: str) -> tuple[str, str | None]:
    """('url without fragment', sha256 or None) from 'url#sha256=HEX'."""
    base, _, frag = url.partition("#")
    if not frag:
        return url, None
    m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", frag)
    if not m:
        raise WeightsError(f"{url}: the part after '#' must be sha256=<64 hex digits>, got "
                           f"'#{frag[:80]}'")
    return base, m.group(1).lower()


def download(url: str, *, cap: int | None = None) -> Path:
    """A verified local copy of `url` in the cache (downloaded once, checked on every use)."""
    cap = cap or max_bytes()
    if url.startswith("hf://"):
        return hub_download(url, cap=cap)
    url, expected = split_checksum(url)
    name = safe_name(url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "weights")
    target = cache_dir() / "weights" / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    record = target.with_name(target.name + ".sha256")
    if target.is_file():
        if _cached_ok(target, record, expected):
            return target
        log.warning("the cached download %s does not match its checksum; downloading it again",
                    target)
        for p in (target, record):
            p.unlink(missing_ok=True)
    digest = fetch(url, target, cap=cap, expected=expected)
    write_bytes_atomic(record, (digest + "\n").encode())
    return target


def _cached_ok(target: Path, record: Path, expected: str | None) -> bool:
    try:
        recorded = record.read_text().strip()
    except OSError:
        return False
    actual = sha256_of(target)
    return actual == recorded and (expected is None or actual == expected)


def fetch(url: str, target: Path, *, cap: int, expected: str | None = None) -> str:
    """Stream `url` into `target` (atomically), enforcing the cap, the announced size and any
    checksum; returns the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write(target) as tmp:
            size = _int(response.headers.get("Content-Length"))
            if size is not None and size > cap:
                raise WeightsError(f"{url}: the file is {size:,} bytes, over the download limit "
                                   f"of {cap:,}; raise HEADSTART_MAX_DOWNLOAD_MB if you trust it")
            expected = expected or header_checksum(response.headers)
            total = 0
            with open(tmp, "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    total += len(block)
                    if total > cap:
                        raise WeightsError(f"{url}: the download ran past the limit of {cap:,} "
                                           "bytes; raise HEADSTART_MAX_DOWNLOAD_MB if you trust "
                                           "the file")
                    h.update(block)
                    out.write(block)
            if size is not None and total != size:
                raise WeightsError(f"{url}: download cut short ({total:,} of {size:,} bytes); "
                                   "try again")
            if expected is not None and h.hexdigest() != expected:
                raise WeightsError(f"{url}: the downloaded file's sha256 is {h.hexdigest()}, "
                                   f"not the {expected} the source gives; it is damaged or not "
                                   "the file published: nothing was kept")
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"{url}: download failed ({reason}); {OFFLINE}") from None
    return h.hexdigest()


def header_checksum(headers) -> str | None:
    """A sha256 the server states: the hub's X-Linked-Etag, or an RFC 3230/9530 digest."""
    etag = (headers.get("X-Linked-Etag") or "").strip('W/"').lower()
    if SHA256.fullmatch(etag):
        return etag
    for field in ("Repr-Digest", "Digest"):
        for part in (headers.get(field) or "").split(","):
            algo, _, value = part.strip().partition("=")
            if algo.lower() == "sha-256":
                try:
                    return base64.b64decode(value.strip(":")).hex()
                except (binascii.Error, ValueError):
                    return None
    return None


def _int(text) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# -- the Hugging Face hub ---------------------------------------------------------------------
def parse_hf(url: str) -> tuple[str, str, str | None]:
    """hf://owner/repo[/path/file][@revision] -> (repo id, file, revision)."""
    spec = url[len("hf://"):].strip("/")
    spec, _, revision = spec.partition("@")
    parts = [p for p in spec.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise WeightsError(f"{url}: expected hf://owner/repo or hf://owner/repo/file.safetensors")
    filename = "/".join(parts[2:]) or "model.safetensors"
    return "/".join(parts[:2]), filename, revision or None


def hub_download(url: str, *, cap: int) -> Path:
    """huggingface_hub's download, with the cap before it and the hub's checksum after it."""
    # deferred on purpose: only hf:// URLs need huggingface_hub, whose import is slow
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    repo, filename, revision = parse_hf(url)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    folder = cache_dir() / "hub"
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision,
                                               endpoint=endpoint), timeout=30)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, ...: a verified copy will do
        cached = _cached_hub_file(repo, filename, revision, folder)
        if cached is not None:
            return cached
        raise WeightsError(f"{url}: download failed ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]}); {OFFLINE}") from None
    if meta.size is not None and meta.size > cap:
        raise WeightsError(f"{url}: the file is {meta.size:,} bytes, over the download limit of "
                           f"{cap:,}; raise HEADSTART_MAX_DOWNLOAD_MB if you trust it")
    for attempt in range(2):
        try:
            path = Path(hf_hub_download(repo, filename, revision=revision, cache_dir=folder,
                                        endpoint=endpoint))
        except Exception as e:  # noqa: BLE001
            _drop_incomplete(folder)
            raise WeightsError(f"{url}: download failed ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}); {OFFLINE}") from None
        if matches_etag(path, meta.etag):
            return path
        _drop(path)  # a damaged cached blob, or a damaged transfer: once more, from scratch
    raise WeightsError(f"{url}: the downloaded file does not match the hub's checksum "
                       f"({meta.etag}); it is damaged or not the file published: nothing was "
                       "kept")


def matches_etag(path: Path, etag: str | None) -> bool:
    """The hub's ETag is the sha256 of an LFS file, or the git blob hash of a small one."""
    etag = (etag or "").strip('W/"').lower()
    if SHA256.fullmatch(etag):
        return sha256_of(path) == etag
    if re.fullmatch(r"[0-9a-f]{40}", etag):
        data = path.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == etag
    return True  # the source gives no checksum: the size check of the download stands


def _cached_hub_file(repo: str, filename: str, revision, folder: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache  # deferred on purpose (see above)

    cached = try_to_load_from_cache(repo, filename, cache_dir=folder, revision=revision)
    if not isinstance(cached, str):
        return None
    path = Path(cached)
    blob = path.resolve().name  # blobs are stored under their ETag
    return path if matches_etag(path, blob) else None


def _drop(path: Path) -> None:
    blob = path.resolve()
    for p in (blob, path):
        try:
            p.unlink()
        except OSError:
            pass


def _drop_incomplete(folder: Path) -> None:
    for p in folder.glob("*/blobs/*.incomplete"):
        try:
            p.unlink()
        except OSError:
            pass
