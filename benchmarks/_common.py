"""Shared helpers for the benchmarks: a throw-away HEADSTART_CACHE, real animal-mnist images,
machine facts, and plain-text tables. Not part of the package; imported by the scripts in this
folder (`python benchmarks/NAME.py` puts this folder first on sys.path)."""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(1, str(REPO / "src"))


@contextlib.contextmanager
def temp_cache(prefix: str = "headstart-bench-"):
    """Point HEADSTART_CACHE at a fresh temporary folder (the user's cache is never touched);
    restore the environment and delete the folder afterwards. Yields the folder."""
    old = os.environ.get("HEADSTART_CACHE")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["HEADSTART_CACHE"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("HEADSTART_CACHE", None)
        else:
            os.environ["HEADSTART_CACHE"] = old
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def temp_dir(prefix: str = "headstart-bench-"):
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The shipped animal-mnist images (10,000 x 28 x 28 uint8) and labels (0..9)."""
    from headstart.data.shipped import load_animal_mnist
    return load_animal_mnist()


def stratified_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """All indices, classes interleaved (c0, c1, ..., c9, c0, ...), so any prefix is balanced."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    n = min(len(p) for p in per_class)
    head = np.stack([p[:n] for p in per_class], axis=1).reshape(-1)
    rest = np.concatenate([p[n:] for p in per_class])
    return np.concatenate([head, rng.permutation(rest)])


def write_animal_folder(root: Path, n: int, *, seed: int = 0) -> Path:
    """Write n real animal-mnist images as root/<class>/<copy>_<index>.png, classes balanced.

    Beyond 10,000 the images are written again; copy k changes pixel (0, 0) by k, so every file
    has its own content hash (the feature cache treats it as a new image)."""
    from PIL import Image

    from headstart.data.shipped import ANIMAL_CLASSES

    images, labels = animal_mnist()
    order = stratified_order(labels, seed)
    for k in range(n):
        i = int(order[k % len(order)])
        copy = k // len(order)
        img = images[i]
        if copy:
            img = img.copy()
            img[0, 0] = (int(img[0, 0]) + copy) % 256
        d = root / ANIMAL_CLASSES[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{copy}_{i:05d}.png")
    return root


def machine_line() -> str:
    import torch
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average n/a"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, {load}")


def cpu_has(flag: str) -> bool:
    try:
        return flag in open("/proc/cpuinfo").read().split()
    except OSError:
        return False


def table(headers: list[str], rows: list[list], *, title: str | None = None) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(headers, widths)))
    out = [title] if title else []
    out += [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def _fmt(c) -> str:
    if isinstance(c, float):
        if c == 0 or abs(c) >= 100:
            return f"{c:.1f}"
        if abs(c) >= 1:
            return f"{c:.2f}"
        return f"{c:.3g}"
    return str(c)


def median(xs) -> float:
    return float(statistics.median(xs))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def headstart(*args, env=None) -> str:
    """Run `headstart ARGS` as a user does (a fresh process); its stdout, or exit with its
    output when it fails."""
    r = subprocess.run([sys.executable, "-m", "headstart", *map(str, args)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"error: headstart {' '.join(map(str, args[:2]))} failed (exit "
                 f"{r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r.stdout
