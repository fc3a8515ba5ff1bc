"""Peak resident memory of a `linear_probe` run on 2,000 and on 20,000 images.

    python benchmarks/memory.py            # 2,000 and 20,000 images at 224 px (~9 min)
    python benchmarks/memory.py --quick    # 2,000 and 20,000 images at 64 px (~3 min)
    python benchmarks/memory.py --texts    # compare and rank on BBC articles, 8/class and all

Each run is a fresh `headstart train DATA --strategy linear_probe --image-size S --out RUN
--quiet` process with its own empty HEADSTART_CACHE (so every image is decoded and run through
the backbone, the path where memory could grow with the data). Its peak RSS is ru_maxrss from
os.wait4 on that process alone. The data: real animal-mnist images as PNG files; 20,000 is the
10,000 images written twice, the second copy with one pixel changed so every file hashes
differently. A bare `import headstart.api, onnxruntime` process is measured as the floor. The
runs go small, large, small, large (with --repeats 2) so a drift in the machine shows up.

--texts measures the text commands instead: `headstart compare` (every arm: probe, the default
transfer, scratch, classic; the 700 held-out articles as --test) and `headstart rank` on the
BBC News training pool at --text-sizes per class (0 = all 1,427 articles), each a fresh process
with its own empty cache. compare runs --small-epochs (default 5) below all the data and
--all-epochs (default 1) on all of it: memory is set by the batch and the data held, not by
the number of epochs.

Full mode uses the native 224 px (about 9 minutes on 2 cores shared with a training job);
--quick uses 64 px to save time: the backbone's activations per batch (what the size changes)
are bounded by the batch size, while what grows with the number of images (feature vectors,
1280 x 2 views x 4 bytes per image) does not depend on the size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C

from headstart.backbones import get_config

MB = 1024 * 1024


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64 px")
    p.add_argument("--size", type=int, default=None, help="image size (default 224, quick 64)")
    p.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--repeats", type=int, default=1, help="measure each count this many times")
    p.add_argument("--texts", action="store_true", help="compare and rank on BBC articles")
    p.add_argument("--text-sizes", type=int, nargs="+", default=[8, 0],
                   help="articles per class (0: all)")
    p.add_argument("--small-epochs", type=int, default=5, help="compare epochs below all data")
    p.add_argument("--all-epochs", type=int, default=1, help="compare epochs on all data")
    a = p.parse_args()
    a.size = a.size or (64 if a.quick else 224)
    return a


def measure(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess | str]:
    """(peak RSS in MB, wall seconds, output) of one child process, via os.wait4."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}")
    return usage.ru_maxrss * 1024 / MB, time.perf_counter() - t, out  # ru_maxrss: KiB on Linux


def env_and_floor(tmp: Path) -> tuple[dict, float]:
    """(the environment every measured process runs in, with this checkout's src/ first; the
    peak RSS in MB of a bare `import headstart.api, onnxruntime` process in it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(C.REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    floor, _, _ = measure([sys.executable, "-c", "import headstart.api, onnxruntime"],
                          {**env, "HEADSTART_CACHE": str(tmp / "c0")})
    return env, floor


def train_cmd(data: Path, out: Path, size: int) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", "train", str(data), "--strategy",
            "linear_probe", "--image-size", str(size), "--out", str(out), "--quiet"]


def main() -> None:
    args = parse_args()
    print(f"machine: {C.machine_line()}")
    if args.texts:
        return texts(args)
    with C.temp_dir() as tmp:
        t = time.perf_counter()
        data = {n: C.write_animal_folder(tmp / f"data{n}", n) for n in args.counts}
        print(f"wrote {', '.join(str(n) for n in args.counts)} animal-mnist PNGs in "
              f"{time.perf_counter() - t:.0f}s; linear_probe at {args.size}px, flip views on, "
              f"batch 32, cold cache per run")
        base_env, floor = env_and_floor(tmp)
        peaks: dict[int, list[tuple[float, float, str]]] = {n: [] for n in args.counts}
        for r in range(args.repeats):
            for n in args.counts:
                cache = tmp / f"cache-{n}-{r}"
                env = {**base_env, "HEADSTART_CACHE": str(cache)}
                peak, wall, out = measure(train_cmd(data[n], tmp / f"run-{n}-{r}", args.size),
                                          env)
                done = next((ln for ln in out.splitlines() if ln.startswith("done in")), "")
                peaks[n].append((peak, wall, done))
                print(f"  {n} images: peak RSS {peak:.0f} MB, {wall:.0f}s; {done}", flush=True)
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(tmp / f"run-{n}-{r}", ignore_errors=True)
        report(args, floor, peaks)


def report(args, floor: float, peaks) -> None:
    rows = [["import headstart.api + onnxruntime (floor)", "", f"{floor:.0f}", "", ""]]
    for n, runs in peaks.items():
        best = min(p for p, _, _ in runs)
        rows.append([f"linear_probe, {n} images, {args.size}px", n, f"{best:.0f}",
                     f"{C.median([w for _, w, _ in runs]):.0f}",
                     ", ".join(f"{p:.0f}" for p, _, _ in runs)])
    print()
    print(C.table(["run", "images", "peak RSS MB", "wall s", "each run MB"], rows,
                  title="peak resident memory (ru_maxrss of the `headstart train` process)"))
    counts = list(peaks)
    lo, hi = counts[0], counts[-1]
    p_lo = min(p for p, _, _ in peaks[lo])
    p_hi = min(p for p, _, _ in peaks[hi])
    per_image = (p_hi - p_lo) * MB / (hi - lo) if hi != lo else 0.0
    print()
    print(f"{hi} vs {lo} images: peak {p_hi:.0f} MB vs {p_lo:.0f} MB = {p_hi / p_lo:.2f}x "
          f"for {hi / lo:.0f}x the images; {per_image / 1024:.1f} KB more per extra image; "
          f"above the import floor: {p_hi - floor:.0f} MB vs {p_lo - floor:.0f} MB")
    print(f"target: {hi} images under 2 GB: {C.verdict(p_hi < 2048)}; roughly flat (< 1.5x): "
          f"{C.verdict(p_hi / p_lo < 1.5)}")
    print("(a cached feature vector is 1280 float32 x 2 views = 10 KB per image; they are kept "
          "in memory for the head fit)")


def texts(args) -> None:
    """Peak RSS of `compare` and `rank` on BBC articles at each size, cold cache each."""
    with C.temp_dir() as tmp:
        base_env, floor = env_and_floor(tmp)
        rows, peaks = [], {}
        for n in args.text_sizes:
            data = tmp / f"bbc{n}"
            C.headstart("make-dataset", "bbc-news", data, *(["--per-class", n] if n else []))
            count = sum(1 for f in (data / "train").rglob("*") if f.is_file())
            epochs = args.small_epochs if n else args.all_epochs
            cmds = {
                "compare": [sys.executable, "-m", "headstart.cli.main", "compare",
                            str(data / "train"), "--test", str(data / "test"), "--epochs",
                            str(epochs), "--out", str(tmp / f"cmp{n}"), "--quiet"],
                "rank": [sys.executable, "-m", "headstart.cli.main", "rank",
                         str(data / "train"), "--quiet"]}
            for name, cmd in cmds.items():
                cache = tmp / f"cache-{name}-{n}"
                peak, wall, out = measure(cmd, {**base_env, "HEADSTART_CACHE": str(cache)})
                shutil.rmtree(cache, ignore_errors=True)
                peaks[name, count] = peak
                what = f"{name}, {count} articles" + (f", {epochs} epochs" if name == "compare"
                                                      else "")
                rows.append([what, count, f"{peak:.0f}", f"{wall:.0f}"])
                print(f"  {what}: peak RSS {peak:.0f} MB, {wall:.0f}s", flush=True)
    print()
    print(C.table(["run", "training texts", "peak RSS MB", "wall s"],
                  [["import headstart.api + onnxruntime (floor)", "", f"{floor:.0f}", ""]]
                  + rows, title="peak resident memory, text commands (700 test articles)"))
    counts = sorted({c for _, c in peaks})
    feat = get_config("minilm_l6").feature_dim * 4  # one text's embedding, float32
    for name in ("compare", "rank"):
        lo, hi = counts[0], counts[-1]
        growth = ""
        if hi > lo:  # what one more text costs, against its embedding's own size
            extra = (peaks[name, hi] - peaks[name, lo]) * MB / (hi - lo)
            growth = (f"{hi} vs {lo} texts: {peaks[name, hi]:.0f} vs {peaks[name, lo]:.0f} MB, "
                      f"{extra / 1024:.1f} KB per extra text (its embedding: "
                      f"{feat / 1024:.1f} KB); ")
        print(f"{name}: {growth}under 2 GB at every size: "
              f"{C.verdict(max(peaks[name, c] for c in counts) < 2048)}")


if __name__ == "__main__":
    main()
