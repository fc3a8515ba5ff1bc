"""Reading one image safely: formats, modes, size limits, and a content hash for caching."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..exceptions import ImageReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".heic",
                    ".heif")
# Files that operating systems and tools drop into folders; ignored, and counted aloud.
SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (about 89 MP)
# The only formats decoded, whatever a file's name says: never EPS/PS (Pillow would start
# Ghostscript) nor any other plugin that hands the bytes to an outside program.
DECODERS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")  # JPEG covers MPO too; and HEIF:
# HEIF/HEIC (iPhone photos): brands of the ISO box that opens the file; the decoder
# (pillow-heif, libheif) is registered with Pillow the first time such a file is read
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")

ImageSource = Union[str, Path, Image.Image, np.ndarray]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_system_file(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def describe(source: ImageSource) -> str:
    """A short name for an image source, used in messages."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array of shape {source.shape}"
    return f"PIL image {getattr(source, 'size', '')}"


def is_regular_file(path: str | Path) -> bool:
    """A regular file (links followed); False for anything odd, never an exception (names with
    NUL bytes, names too long for the system, unreachable folders)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


# the largest file an image within the pixel limit can take (16-bit RGBA, uncompressed)
MAX_FILE_BYTES = DEFAULT_MAX_PIXELS * 8 + 2**20


def _file_limit(max_pixels: int) -> int:
    return max(MAX_FILE_BYTES, max_pixels * 8 + 2**20)


def read_file(path: str | Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, or an ImageReadError naming it and the fix."""
    name = str(path)
    try:
        exists = os.path.lexists(path)  # a dangling link exists but "cannot be read"
        st = os.stat(path) if exists else None
    except (OSError, ValueError) as e:
        raise ImageReadError(name[:300], f"cannot be read ({getattr(e, 'strerror', None) or e})",
                             "check the path") from None
    if not exists:
        raise ImageReadError(name, "does not exist", "check the path")
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ImageReadError(name, f"is {what}", "pass image files")
    if st.st_size > limit:
        raise ImageReadError(name, f"is {st.st_size:,} bytes, larger than any image within the "
                             "pixel limit", "downscale it, or remove it")
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(name, f"cannot be read ({e.strerror or e})",
                             "check that the file is readable") from None


def content_hash(source: ImageSource, data: bytes | None = None) -> str:
    """A hash of the image's content: the file's bytes (pass them as `data` if already read),
    or the pixels of an in-memory image."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(source, (str, Path)):
        h.update(read_file(source) if data is None else data)
        return h.hexdigest()
    arr = np.asarray(source)
    h.update(str(arr.shape).encode() + str(arr.dtype).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def open_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               fit: int | None = None) -> Image.Image:
    """Return the image as a fully decoded RGB PIL image, or raise ImageReadError naming it.
    `fit`: the shorter side the caller will shrink it to (see decode_bytes)."""
    name = describe(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, Image.Image):
        return _to_rgb(source, name)
    return decode_bytes(read_file(source, limit=_file_limit(max_pixels)), name,
                        max_pixels=max_pixels, fit=fit)


# A JPEG decoded for a caller that shrinks it to a shorter side of `fit` is decoded at the
# smallest of 1/1, 1/2, 1/4, 1/8 of its size whose shorter side stays at least DRAFT_MARGIN *
# fit (libjpeg's DCT scaling): the margin that Preprocess.resize's reducing_gap keeps, so the
# bicubic step sees what it saw before. A 12-megapixel photo for 224 px: 1008 x 756 decoded,
# about 3x faster to decode and resize, pixels within 2 grey levels (benchmarks/README.md).
DRAFT_MARGIN = 3


def decode_bytes(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 fit: int | None = None) -> Image.Image:
    with pil_errors(name):
        img = _open_checked(data, name, max_pixels)
        if getattr(img, "is_animated", False):
            img.seek(0)  # GIF/WebP animations: the first frame
        if fit and img.format == "JPEG" and min(img.size) > DRAFT_MARGIN * fit:
            scale = DRAFT_MARGIN * fit / min(img.size)
            img.draft(None, (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale)))
        img.load()
        img = ImageOps.exif_transpose(img)  # phone photos: apply the orientation tag
    return _to_rgb(img, name)


@contextlib.contextmanager
def pil_errors(name: str):
    """Turn Pillow's ways of failing into one ImageReadError naming the file and the fix."""
    try:
        with warnings.catch_warnings():  # bombs are checked by size; odd EXIF is harmless
            warnings.simplefilter("ignore")
            yield
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(name, f"is too large to decode safely ({e})",
                             "downscale it or raise --max-pixels") from None
    except UnidentifiedImageError:
        raise ImageReadError(name, "is not an image Pillow can identify",
                             "remove it, or pass --skip-bad to skip such files") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(name, f"is corrupt or truncated ({e})",
                             "re-export or remove it, or pass --skip-bad") from None


def check_pixels(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageReadError(
            name, f"is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} that guards "
            "against decompression bombs",
            "downscale it, or raise the limit with --max-pixels if you trust the file")


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open (header only) and check the size; call inside pil_errors."""
    if not data:
        raise ImageReadError(name, "is empty (0 bytes)", "remove it or replace it with a real image")
    heif = data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS
    if heif:
        _register_heif()
    img = Image.open(io.BytesIO(data), formats=DECODERS + (("HEIF",) if heif else ()))
    check_pixels(img, name, max_pixels)
    return img


@functools.cache
def _register_heif() -> None:
    from pillow_heif import register_heif_opener  # deferred on purpose: 40 ms, HEIF files only
    register_heif_opener()


def read_checked(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Content hash of a source, after a cheap header check (readable, an image, not too
    large) for files, from one read of the file. Decoding errors show only when decoded."""
    if not isinstance(source, (str, Path)):
        return content_hash(source)
    data = read_file(source, limit=_file_limit(max_pixels))
    with pil_errors(str(source)):
        _open_checked(data, str(source), max_pixels)
    return content_hash(source, data)


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_8_bits(np.asarray(img, dtype=np.float64),
                                          unit=img.mode == "F")).convert("RGB")
    return img.convert("RGB")


def _to_8_bits(arr: np.ndarray, *, unit: bool) -> np.ndarray:
    """16-bit, 32-bit integer or float pixels as 8 bits. Floats within 0..1 (`unit`) map to
    0..255; non-negative values by their top (0..top -> 0..255, as 16-bit images); values below
    zero, or floats past 1, by the image's own range (min..max -> 0..255). NaN and infinities
    take the ends of the finite range, so one odd pixel never blacks out the image."""
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    if unit and lo >= 0 and hi <= 1:
        scaled = arr * 255
    elif lo >= 0 and not unit:
        scaled = arr / max(hi, 1.0) * 255
    else:
        scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageReadError(name, "is not an image array",
                             "pass HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) arrays")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(a), name)
