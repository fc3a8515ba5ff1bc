"""The feature cache: a `linear_probe` run with a cold cache, then the same run with a warm one.

    python benchmarks/warm_cache.py            # 2,000 animal-mnist images
    python benchmarks/warm_cache.py --quick    # 500 images, no CLI pair

Each pair runs back to back with its own fresh HEADSTART_CACHE: cold (empty cache: ONNX export,
decoding, backbone on every image and its flip) then warm (hash the files, read the vectors,
fit the head). Pairs: image_size fixed (224 px, so the automatic size measurement does not blur
the ratio), image_size 'auto' (the 3-size measurement is cached too), and, unless --quick or
--no-cli, the fixed pair as two `headstart train` processes (what a user sees, imports
included). The in-process pairs run after a small throw-away warm-up run, so neither side pays
one-time process costs (imports, kernel initialisation).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 images, no CLI pair")
    p.add_argument("--n", type=int, default=None, help="images (default 2000, quick 500)")
    p.add_argument("--size", type=int, default=224, help="the fixed image size")
    p.add_argument("--no-auto", action="store_true", help="skip the image_size='auto' pair")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess pair")
    a = p.parse_args()
    a.n = a.n or (500 if a.quick else 2000)
    a.cli = not (a.quick or a.no_cli)
    return a


class Clock:
    """A `log` callback that timestamps what train() reports, for a rough breakdown."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.lines: list[tuple[float, str]] = []

    def __call__(self, msg: str) -> None:
        self.lines.append((time.perf_counter() - self.t0, str(msg)))

    def at(self, prefix: str) -> float | None:
        return next((t for t, m in self.lines if m.startswith(prefix)), None)


def api_run(data: Path, image_size) -> dict:
    from headstart import api
    from headstart.training.config import TrainConfig

    clock = Clock()
    cfg = TrainConfig(strategy="linear_probe", input_size=image_size)
    result = api.train(data, None, config=cfg, progress=False, log=clock)
    total = time.perf_counter() - clock.t0
    head_fit = float(result.history[-1].get("seconds", 0.0)) if result.history else 0.0
    row_t = clock.at("phase=") or total  # the epoch row is logged right after the head fit
    phase_t = max((t for t, m in clock.lines if m.startswith("phase ")), default=0.0)
    return {"seconds": total, "val_accuracy": result.metrics["val_accuracy"],
            "image_size": result.config.input_size, "head_fit": head_fit,
            "features": max(0.0, row_t - head_fit - phase_t), "before": phase_t,
            "after": total - row_t}


def cli_run(data: Path, out: Path, image_size) -> dict:
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "headstart.cli.main", "train", str(data), "--strategy",
           "linear_probe", "--image-size", str(image_size), "--out", str(out), "--quiet",
           "--overwrite"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("done in")]
    return {"seconds": time.perf_counter() - t, "line": done[-1] if done else ""}


def pair(label: str, run, after=None) -> dict:
    with C.temp_cache():
        cold = run()
        warm = run()
        print(f"  {label}: cold {cold['seconds']:.1f}s, warm {warm['seconds']:.1f}s", flush=True)
        extra = after() if after else None
    return {"label": label, "cold": cold, "warm": warm, "extra": extra}


def main() -> None:
    args = parse_args()
    print(f"machine: {C.machine_line()}")
    with C.temp_dir() as tmp:
        from headstart.data.shipped import write_animal_mnist
        data = write_animal_mnist(tmp / "am", per_class=args.n // 10) / "train"
        small = write_animal_mnist(tmp / "warmup", per_class=5) / "train"
        n = sum(1 for _ in data.rglob("*.png"))
        print(f"data: {n} animal-mnist images (10 classes) in {data}; linear_probe, flip views "
              "on (2 backbone passes per image), val fraction 0.2")
        with C.temp_cache():  # throw-away: imports, oneDNN/ORT initialisation
            api_run(small, 64)
        pairs = [pair(f"api.train image_size={args.size}", lambda: api_run(data, args.size))]
        if not args.no_auto:
            pairs.append(pair("api.train image_size=auto", lambda: api_run(data, "auto")))
        if args.cli:
            pairs.append(pair(f"headstart train --image-size {args.size} (new process each)",
                              lambda: cli_run(data, tmp / "run", args.size)))
        report(pairs, n)


def report(pairs: list[dict], n: int) -> None:
    rows = []
    for p in pairs:
        c, w = p["cold"], p["warm"]
        rows.append([p["label"], c["seconds"], w["seconds"], f"{c['seconds'] / w['seconds']:.1f}x",
                     c.get("image_size", ""), _acc(c, w)])
    print()
    print(C.table(["run", "cold s", "warm s", "cold/warm", "size", "val acc cold/warm"], rows,
                  title=f"linear_probe on {n} images: cold cache then warm cache, back to back"))
    first = pairs[0]
    print()
    print("breakdown of the in-process runs (s): before = data scan, size choice, plan; features "
          "= model build + extraction/cache read; head = L-BFGS fit; after = final metrics")
    brows = []
    for p in pairs:
        for kind in ("cold", "warm"):
            r = p[kind]
            if "features" in r:
                brows.append([f"{p['label']} {kind}", r["before"], r["features"], r["head_fit"],
                              r["after"], r["seconds"]])
    print(C.table(["run", "before", "features", "head", "after", "total"], brows))
    ratio = first["cold"]["seconds"] / first["warm"]["seconds"]
    print()
    print(f"warm-cache speed-up, {first['label']}: {ratio:.1f}x (target >= 10x: "
          f"{C.verdict(ratio >= 10)})")
    for p in pairs[1:]:
        print(f"warm-cache speed-up, {p['label']}: "
              f"{p['cold']['seconds'] / p['warm']['seconds']:.1f}x")


def _acc(c: dict, w: dict) -> str:
    if "val_accuracy" not in c:
        return ""
    same = "same" if c["val_accuracy"] == w["val_accuracy"] else "DIFFERENT"
    return f"{c['val_accuracy']:.4f}/{w['val_accuracy']:.4f} ({same})"


if __name__ == "__main__":
    main()
