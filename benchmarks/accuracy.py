"""The issues' accuracy criteria on real shipped data, through the CLI as a user runs it.

    python benchmarks/accuracy.py linear_probe --seeds 0 1 2 3 4        # animal-mnist, 10/class
    python benchmarks/accuracy.py fine_tune                             # animal-mnist, all 8,000
    python benchmarks/accuracy.py linear_probe --dataset bbc-news --per-class 8 --seeds 0 1 2 3 4
    python benchmarks/accuracy.py contrastive --dataset bbc-news --per-class 8 --seeds 0 1 2 3 4
    python benchmarks/accuracy.py linear_probe --dataset bbc-news --per-class 0   # all articles
    python benchmarks/accuracy.py fine_tune --dataset bbc-news --per-class 0 --epochs 2 --unfreeze 3

Options the script does not know are passed on to `headstart train`.

The hold-outs (animal-mnist: 2,000 images with no exact duplicate in the package; bbc-news: 700
articles, likewise) are never trained on; each run's validation split comes out of its training
data.
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
    p = argparse.ArgumentParser(epilog="Any other option (--refit full, --lr 1e-4, ...) is passed "
                                "on to `headstart train`.")
    p.add_argument("strategy", choices=["linear_probe", "fine_tune", "gradual", "scratch",
                                        "contrastive"])
    p.add_argument("--dataset", default="animal-mnist", choices=["animal-mnist", "bbc-news"])
    p.add_argument("--per-class", type=int, default=None,
                   help="training examples per class (default: 10 for linear_probe, else all; "
                   "0 = all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", default="auto")
    p.add_argument("--work", default=None, help="folder for data and runs (default: temporary)")
    args, args.extra = p.parse_known_args()  # anything else goes to `headstart train`
    per_class = args.per_class if args.per_class is not None else (
        10 if args.strategy in ("linear_probe", "contrastive") else None)
    per_class = per_class or None
    work = Path(args.work or tempfile.mkdtemp(prefix="headstart-acc-"))
    os.environ.setdefault("HEADSTART_CACHE", str(work / "cache"))
    results = []
    for seed in args.seeds:
        data = work / f"{args.dataset}-{per_class or 'all'}-{seed}"
        run(["make-dataset", args.dataset, str(data), "--seed", str(seed)]
            + (["--per-class", str(per_class)] if per_class else []))
        out = work / f"run-{args.dataset}-{args.strategy}-{per_class or 'all'}-{seed}"
        t0 = time.perf_counter()
        size_args = ["--image-size", args.image_size] if args.dataset == "animal-mnist" else []
        run(["train", str(data / "train"), "--out", str(out), "--strategy", args.strategy,
             "--epochs", str(args.epochs), "--seed", str(seed), "--quiet", "--overwrite",
             *size_args, *args.extra])
        seconds = time.perf_counter() - t0
        report = json.loads(run(["evaluate", str(out), str(data / "test"), "--json"]))
        metrics = json.loads((out / "metrics.json").read_text())
        size = metrics.get("input_size", metrics.get("image_size"))  # older runs' key
        results.append(report["accuracy"])
        print(f"seed {seed}: {args.strategy} on {per_class or 'all'}/class, size {size}, "
              f"train {seconds:.0f}s -> test accuracy {report['accuracy']:.4f} "
              f"(n={report['n']})", flush=True)
    mean = sum(results) / len(results)
    print(f"{args.strategy}: mean test accuracy {mean:.4f}, min {min(results):.4f} over "
          f"{len(results)} seed(s)")


if __name__ == "__main__":
    main()
