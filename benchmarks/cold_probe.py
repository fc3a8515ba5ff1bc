"""A cold `linear_probe`, as a whole process, against the compute bound of the passes it needs;
where the rest of its time goes; and the same command again with the cache warm.

    python benchmarks/cold_probe.py            # 2,900 animal-mnist PNGs at 224 px
    python benchmarks/cold_probe.py --quick    # 600 PNGs

The data: N real animal-mnist images (28 px PNG files, classes balanced) in class folders.
The command, run twice as a user runs it, in a fresh process each time:

    headstart train DATA --strategy linear_probe --image-size S --out RUN --quiet

first with an empty HEADSTART_CACHE (cold: every image decoded, resized and run through the
network, the ONNX graph exported), then again on the same cache (warm: features read back).

The passes it needs: one forward pass of EfficientNet-Lite0 at S px per view of every image
(2 views, the image and its mirror image: `--flip` is on by default). The bound is their FLOPs
(torch.utils.flop_counter's count, 2 per multiply-add) over this machine's best fp32 matmul
rate (2048^3, torch or numpy, measured in this run just before the cold process). The
fraction printed is bound / cold wall time (target >= 0.5).

Where the rest goes, from the same run: the import floor (a fresh process importing
headstart.api and onnxruntime); the run's one pass over every input (metrics.json
`prepare_seconds`: the ONNX export and parity check, decoding and resizing, hashing, the
cache writes, and the network itself, whose time alone is measured separately on the same
images, pre-processed, through headstart's FeatureExtractor); the rest of the run (data scan,
plan, head fit, metrics: `seconds` - `prepare_seconds`); and what is outside the run (CLI
start beyond the imports, writing the run directory, exit).

    python benchmarks/cold_probe.py --before /tmp/old/src --rounds 3

side by side instead: the same cold process with another headstart (a `src` folder, e.g. of a
`git worktree` of an earlier commit, put first on PYTHONPATH) and with this one, alternating
which runs first in each round, each with an empty cache; prints every round, the medians,
their ratio and each one's fraction of the compute bound.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C
from feature_extraction import matmul_rate

BACKBONE = "efficientnet_lite0"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="600 images")
    p.add_argument("--n", type=int, default=None, help="images (default 2900, quick 600)")
    p.add_argument("--size", type=int, default=224, help="--image-size of the run")
    p.add_argument("--before", type=Path, default=None,
                   help="another headstart's src folder: time its cold process against this "
                        "one's, side by side")
    p.add_argument("--rounds", type=int, default=3, help="--before: rounds of the two")
    a = p.parse_args()
    if a.before is not None and not (a.before / "headstart" / "__init__.py").is_file():
        p.error(f"--before {a.before}: no headstart package there (give a src folder)")
    a.n = a.n or (600 if a.quick else 2900)
    return a


def timed_process(args: list, env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, args[:5]))} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def kernel_seconds(data: Path, size: int, views: int, cache: Path) -> float:
    """The network alone: headstart's FeatureExtractor (its own engine and threads) on every
    image of `data`, decoded and pre-processed beforehand, each view once, batches of 32."""
    os.environ["HEADSTART_CACHE"] = str(cache)
    from headstart.backbones import create_backbone, get_config
    from headstart.data.images import open_image
    from headstart.data.transforms import Preprocess
    from headstart.training.features import FeatureExtractor

    b = get_config(BACKBONE)
    pre = Preprocess(size, b.mean, b.std)
    files = sorted(data.rglob("*.png"))
    x = np.stack([pre(open_image(f)) for f in files]).astype(np.float32)
    extractor = FeatureExtractor(create_backbone(BACKBONE, image_size=size).eval())
    extractor(x[:32])  # export, parity check and warm-up, outside the clock
    t = time.perf_counter()
    for view in range(views):
        xv = x if view == 0 else x[..., ::-1].copy()
        for k in range(0, len(xv), 32):
            extractor(xv[k:k + 32])
    return time.perf_counter() - t


def side_by_side(a, data: Path, work: Path, bound: float) -> None:
    """Cold processes of the --before headstart and of this one, alternating."""
    times: dict[str, list[float]] = {"before": [], "this": []}
    for r in range(a.rounds):
        for side in (("before", "this") if r % 2 == 0 else ("this", "before")):
            env = {**os.environ, "HEADSTART_CACHE": str(work / f"cache-{side}-{r}")}
            if side == "before":
                env["PYTHONPATH"] = os.pathsep.join(
                    [str(a.before.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])
            times[side].append(timed_process(
                [sys.executable, "-m", "headstart", "train", str(data), "--strategy",
                 "linear_probe", "--image-size", str(a.size), "--out",
                 str(work / f"run-{side}-{r}"), "--quiet"], env))
            print(f"round {r + 1} {side:<6} cold {times[side][-1]:.1f} s", flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(C.table(["headstart", "cold s (median)", "rounds", "of the compute bound"],
                  [[f"before ({a.before})", f"{med['before']:.1f}",
                    " ".join(f"{t:.1f}" for t in times["before"]),
                    f"{bound / med['before']:.2f}"],
                   ["this", f"{med['this']:.1f}", " ".join(f"{t:.1f}" for t in times["this"]),
                    f"{bound / med['this']:.2f}"]]))
    print(f"this one: {med['before'] / med['this']:.3f}x the speed of the one before "
          f"(median cold processes, side by side)")


def main() -> None:
    a = parse_args()
    print(f"machine: {C.machine_line()}")
    with C.temp_dir() as work:
        data = C.write_animal_folder(work / "data", a.n)
        from headstart.backbones import count_flops, create_backbone
        flops = count_flops(create_backbone(BACKBONE, image_size=a.size).eval(), a.size)
        views = 2
        rate = max(matmul_rate(2048).values()) * 1e9
        bound = a.n * views * flops / rate
        if a.before is not None:
            print(f"{a.n} animal-mnist PNGs, {BACKBONE} at {a.size}px, {views} views; best fp32 "
                  f"matmul {rate / 1e9:.0f} GFLOP/s -> bound {bound:.1f} s")
            return side_by_side(a, data, work, bound)
        env = {**os.environ, "HEADSTART_CACHE": str(work / "cache")}
        cmd = [sys.executable, "-m", "headstart", "train", str(data), "--strategy",
               "linear_probe", "--image-size", str(a.size), "--out", str(work / "run"),
               "--quiet"]
        cold = timed_process(cmd, env)
        m = json.loads((work / "run" / "metrics.json").read_text())
        warm = timed_process([*cmd, "--overwrite"], env)
        m_warm = json.loads((work / "run" / "metrics.json").read_text())
        floor = timed_process([sys.executable, "-c", "import headstart.api, onnxruntime"], env)
        kernel = kernel_seconds(data, a.size, views, work / "kernel-cache")

    prep, run_s = m["prepare_seconds"], m["seconds"]
    print(f"{a.n} animal-mnist PNGs, {BACKBONE} at {a.size}px, {views} views: "
          f"{flops / 1e9:.3f} GFLOP per view, {a.n * views * flops / 1e12:.2f} TFLOP in all; "
          f"best fp32 matmul {rate / 1e9:.0f} GFLOP/s -> bound {bound:.1f} s")
    rows = [
        ["cold process, whole", f"{cold:.1f}", "100%"],
        ["  imports (floor: headstart.api + onnxruntime)", f"{floor:.1f}",
         f"{floor / cold:.0%}"],
        ["  the run's pass over every input (prepare_seconds)", f"{prep:.1f}",
         f"{prep / cold:.0%}"],
        ["    of which the network alone (FeatureExtractor, measured apart)", f"{kernel:.1f}",
         f"{kernel / cold:.0%}"],
        ["    of which export, decoding, resizing, hashing, cache writes"
         + (" (< 0: the network ran slower when measured apart)" if prep < kernel else ""),
         f"{prep - kernel:.1f}", f"{(prep - kernel) / cold:.0%}"],
        ["  the rest of the run (scan, plan, head fit, metrics)", f"{run_s - prep:.1f}",
         f"{(run_s - prep) / cold:.0%}"],
        ["  outside the run (CLI start, run directory, exit)", f"{cold - floor - run_s:.1f}",
         f"{(cold - floor - run_s) / cold:.0%}"],
        ["warm process, whole", f"{warm:.1f}", f"{warm / cold:.0%}"],
    ]
    print(C.table(["", "seconds", "of cold"], rows))
    print(f"cold: {bound / cold:.2f} of the compute bound ({bound:.1f} s of {cold:.1f} s; "
          f"target >= 0.5: {C.verdict(bound / cold >= 0.5)}); the network alone runs at "
          f"{bound / kernel:.2f} of the bound")
    print(f"warm re-run: {cold / warm:.1f}x faster than cold as whole processes (target >= 5x: "
          f"{C.verdict(cold / warm >= 5)}); val accuracy cold {m['val_accuracy']:.4f}, warm "
          f"{m_warm['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
