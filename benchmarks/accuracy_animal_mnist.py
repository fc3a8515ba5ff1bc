"""The issue's accuracy criteria on the real animal-mnist data, through the CLI as a user runs it.

    python benchmarks/accuracy_animal_mnist.py linear_probe --seeds 0 1 2 3 4   # 10 per class
    python benchmarks/accuracy_animal_mnist.py fine_tune                        # all 8,000

The 2,000-image hold-out (200 per class, no exact duplicate anywhere in the package) is never
trained on; each run's own validation split comes out of its training images.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "headstart.cli.main", *cmd], check=True,
                         capture_output=True, text=True)
    return out.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("strategy", choices=["linear_probe", "fine_tune", "gradual", "scratch"])
    p.add_argument("--per-class", type=int, default=None,
                   help="training images per class (default: 10 for linear_probe, else all 800)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", default="auto")
    p.add_argument("--work", default=None, help="folder for data and runs (default: temporary)")
    args = p.parse_args()
    per_class = args.per_class or (10 if args.strategy == "linear_probe" else None)
    work = Path(args.work or tempfile.mkdtemp(prefix="headstart-acc-"))
    os.environ.setdefault("HEADSTART_CACHE", str(work / "cache"))
    results = []
    for seed in args.seeds:
        data = work / f"animal-mnist-{per_class or 'all'}-{seed}"
        run(["make-dataset", "animal-mnist", str(data), "--seed", str(seed)]
            + (["--per-class", str(per_class)] if per_class else []))
        out = work / f"run-{args.strategy}-{per_class or 'all'}-{seed}"
        t0 = time.perf_counter()
        run(["train", str(data / "train"), "--out", str(out), "--strategy", args.strategy,
             "--epochs", str(args.epochs), "--image-size", args.image_size, "--seed", str(seed),
             "--quiet", "--overwrite"])
        seconds = time.perf_counter() - t0
        report = json.loads(run(["evaluate", str(out), str(data / "test"), "--json"]))
        size = json.loads((out / "metrics.json").read_text())["image_size"]
        results.append(report["accuracy"])
        print(f"seed {seed}: {args.strategy} on {per_class or 800}/class, {size}px, "
              f"train {seconds:.0f}s -> test accuracy {report['accuracy']:.4f} "
              f"(n={report['n']})", flush=True)
    mean = sum(results) / len(results)
    print(f"{args.strategy}: mean test accuracy {mean:.4f}, min {min(results):.4f} over "
          f"{len(results)} seed(s)")


if __name__ == "__main__":
    main()
