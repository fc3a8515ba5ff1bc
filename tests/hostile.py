"""Makers of hostile files for the corpus and fuzz tests: broken and odd images, tables, run
files. Each returns the path it wrote."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(size=(36, 36), mode="RGB", **save) -> bytes:
    rng = np.random.default_rng(sum(size))
    if mode in ("I;16", "I"):
        arr = rng.integers(0, 65535, size[::-1]).astype(np.uint16)
        img = Image.fromarray(arr) if mode == "I;16" else Image.fromarray(arr.astype(np.int32))
    elif mode == "F":
        img = Image.fromarray(rng.random(size[::-1]).astype(np.float32), mode="F")
    else:
        img = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3)).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (the data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (30, 30), (10, 200, 30, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (24, 24), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def exif_orientation_jpeg(value: int) -> bytes:
    img = Image.new("RGB", (30, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = value
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def text_csv(path: Path, rows, header="text,label", *, encoding="utf-8", bom=b"") -> Path:
    import csv
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(header.split(","))
    w.writerows(rows)
    return write(path, bom + buf.getvalue().encode(encoding))


def jsonl(path: Path, objs) -> Path:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objs]
    return write(path, "\n".join(lines) + "\n")


def words_rows(n_per_class: int = 4, classes=("sport", "tech")) -> list[tuple[str, str]]:
    vocab = {"sport": "match goal team cup striker league win",
             "tech": "software chip phone computer network data"}
    rows = []
    for c in classes:
        w = vocab.get(c, "plain words here").split()
        rows += [(" ".join(w[i % len(w):] + w[:i % len(w)]), c) for i in range(n_per_class)]
    return rows
