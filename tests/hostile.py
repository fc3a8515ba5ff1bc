"""The hostile-input corpus's machinery (cases, the environment they build in, the checks every
case must pass) and makers of hostile files for the corpus and the fuzz tests: broken and odd
images, tables, run files."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import TINY, write_folder

LP = ["--strategy", "linear_probe", "--epochs", "1", *TINY]
TEXT = ["--backbone", "tiny_text", "--strategy", "linear_probe", "--quiet"]


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


# -- the corpus ----------------------------------------------------------------------------
def registry(cases: dict):
    """case(expect, *words): register a case in `cases`. Its builder returns the CLI arguments
    (and optionally a check of the result); `expect` is 'ok' or 'error'; `words` must appear
    in the error line (or, for 'ok', in the output)."""
    def case(expect: str = "error", *words: str):
        def register(fn):
            cases[fn.__name__] = (fn, expect, words)
            return fn
        return register
    return case


class Env:
    def __init__(self, tmp: Path, image_run: Path, text_run_src) -> None:
        self.tmp, self.runs = tmp, tmp / "runs"
        self._image_run, self._text_run = image_run, text_run_src

    def folder(self, name="data", classes=("a", "b"), n=4, **kw) -> Path:
        return write_folder(self.tmp / name, classes, n, **kw)

    def out(self, name="run") -> Path:
        return self.runs / name

    def train(self, data, *extra, name="run"):
        return ["train", data, "--out", self.out(name), *LP, *extra]

    def image_run(self) -> Path:
        """A copy of a finished image run (tiny_cnn, linear_probe), inside runs/."""
        dst = self.runs / "image-run"
        if not dst.exists():
            shutil.copytree(self._image_run, dst)
        return dst

    def text_run(self) -> Path:
        dst = self.runs / "text-run"
        if not dst.exists():
            shutil.copytree(self._text_run(), dst)
        return dst


def snapshot(root: Path, skip: list[Path]) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(dirpath, d) not in skip]
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def offered_flags(line: str, command: str):
    """(command, flag) for every --flag a message offers: the failing command's, or, after a
    quoted `headstart OTHER ...` suggestion (up to its closing mark), OTHER's."""
    current = command
    for m in re.finditer(r"headstart ([a-z][a-z-]*)|(?<![\w-])(--[a-z][a-z-]*)|([`);])", line):
        if m.group(1):
            current = m.group(1)
        elif m.group(2):
            yield current, m.group(2)
        else:
            current = command


def command_flags(command: str) -> set[str]:
    from headstart.cli.main import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and command in a.choices)
    return {s for a in sub.choices[command]._actions for s in a.option_strings} | {"--debug"}


def run_case(entry, cli, tmp_path: Path, image_run: Path, text_run_src) -> None:
    """Build the case, run it through the CLI, and check the corpus's promises."""
    build, expect, words = entry
    e = Env(tmp_path, image_run, text_run_src)
    built = build(e)
    argv, check = built if isinstance(built, tuple) else (built, None)
    runs_before = {p.name for p in e.runs.iterdir()} if e.runs.is_dir() else set()
    before = snapshot(tmp_path, [e.runs])
    r = cli(*argv)
    assert r.rc in (0, 2), r  # never a traceback (exit 1)
    if expect == "error":
        line = r.one_line_error()
        for w in words:
            assert w in line, (w, line)
        for command, flag in offered_flags(line, str(argv[0])):
            assert flag in command_flags(command), (command, flag, line)
    else:
        assert r.rc == 0, r
        for w in words:
            assert w in r.out + r.err, (w, r)
        if check is not None:
            assert check(r, e) is not False, r
    assert snapshot(tmp_path, [e.runs]) == before, "something outside runs/ changed"
    assert not (tmp_path / "HACKED").exists() and not Path("HACKED").exists()
    if e.runs.is_dir():
        left = {p.name for p in e.runs.iterdir()} - runs_before
        assert all(not n.startswith(".") or n == ".run.partial" for n in left), left
