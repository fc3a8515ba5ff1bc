"""Scale-out under torchrun: the same `headstart train` (EfficientNet-Lite0 with its shipped
weights, fine_tune for one epoch) on the same real animal-mnist images with 1, 2 (and 4)
gloo processes of one thread each, and what the measured all-reduce means on a cluster.

    python benchmarks/distributed.py            # 1,000 images at 112 px; 1, 2, 4 processes
    python benchmarks/distributed.py --quick    # 200 images at 64 px; 1 and 2 processes

Each world size runs `torchrun --nproc-per-node N -m headstart train ...` on a fresh feature
cache and reads the run's own figures: `prepare_seconds` (the frozen-feature pass: read,
decode, export the ONNX graph once per machine, extract each image once on one process,
gather) and the fine_tune epoch's `seconds` from history.csv (training steps on each
process's shard with DDP's gradient all-reduce, then the sharded validation pass). The
speed-up of N processes is the 1-process time over the N-process time, side by side.

The all-reduce size per step is what DDP averages: the bytes of the parameters the
fine_tune phase trains (fp32 gradients). The cluster table turns it into time with a ring
all-reduce (each process sends and receives 2 (N - 1) / N times the bytes per step) over a
link of a given bandwidth, against the measured compute time of one step divided by N (the
effective batch is fixed: each process computes batch/N examples), without counting the
overlap of DDP's buckets with the backward pass (so the efficiency shown is a lower bound).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C

BACKBONE = "efficientnet_lite0"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 images at 64 px; 1 and 2 processes")
    p.add_argument("--images", type=int, default=None, help="images (default 1000)")
    p.add_argument("--size", type=int, default=None, help="input size in px (default 112)")
    p.add_argument("--worlds", type=int, nargs="+", default=None,
                   help="process counts (default 1 2 4, 4 only with 4 cores or more)")
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    a.images = a.images or (200 if a.quick else 1000)
    a.size = a.size or (64 if a.quick else 112)
    a.worlds = a.worlds or ([1, 2] if a.quick or (os.cpu_count() or 1) < 4 else [1, 2, 4])
    return a


def run_world(n: int, data: Path, out: Path, args, port: int) -> dict:
    """One `headstart train` under torchrun with n one-thread processes, on a fresh cache."""
    with C.temp_cache(f"headstart-bench-ddp{n}-") as cache:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADSTART_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
               "--master-port", str(port), "-m", "headstart", "train", str(data), "--out",
               str(out), "--backbone", BACKBONE, "--input-size", str(args.size), "--cut",
               "none", "--strategy", "fine_tune", "--epochs", "1", "--batch-size",
               str(args.batch_size), "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"torchrun with {n} processes failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv", newline="") as f:
        epoch = [r for r in csv.DictReader(f) if r["phase"] == "fine_tune"][0]
    return {"n": n, "wall": wall, "prepare": metrics["prepare_seconds"],
            "epoch": float(epoch["seconds"]), "train": metrics["train_examples"],
            "val_acc": metrics["val_accuracy"], "dist": metrics.get("distributed")}


def trained_bytes(size: int) -> tuple[int, int]:
    """(parameters, bytes) that the fine_tune phase trains: DDP's all-reduce per step."""
    from headstart.backbones import get_config
    from headstart.strategies import apply_phase, build_plan
    from headstart.training.config import TrainConfig
    from headstart.training.model import seeded_model
    cfg = TrainConfig(backbone=BACKBONE, input_size=size, strategy="fine_tune", epochs=1)
    plan = build_plan("fine_tune", get_config(BACKBONE).layer_groups, epochs=1, lr=None,
                      unfreeze=cfg.unfreeze, modality="image")
    model = seeded_model(cfg, 10, plan)
    apply_phase(model, [p for p in plan.phases if not p.cached][0])
    params = [p for p in model.parameters() if p.requires_grad]
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def _all_reduce_worker(r: int, port: str, nbytes: int, reps: int, out: str) -> None:
    import torch
    import torch.distributed as td
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    grad = torch.ones(nbytes // 4)
    td.all_reduce(grad)  # warm-up: connections, buffers
    times = []
    for _ in range(reps):
        td.barrier()
        t0 = time.perf_counter()
        td.all_reduce(grad)
        times.append(time.perf_counter() - t0)
    if r == 0:
        Path(out).write_text(json.dumps(times))
    td.destroy_process_group()


def measured_all_reduce(nbytes: int, reps: int) -> float:
    """Best seconds of one gloo all-reduce of `nbytes` between two local processes."""
    import torch.multiprocessing as mp
    with C.temp_dir("headstart-bench-ar-") as tmp:
        mp.spawn(_all_reduce_worker, args=("29790", nbytes, reps, str(tmp / "t.json")),
                 nprocs=2, join=True)
        return min(json.loads((tmp / "t.json").read_text()))


def cluster_table(step_seconds: float, nbytes: int) -> str:
    rows = []
    for nodes in (2, 4, 8, 16):
        compute = step_seconds / nodes
        for gbit in (1, 10, 100):
            comm = 2 * (nodes - 1) / nodes * nbytes * 8 / (gbit * 1e9)
            rows.append([nodes, f"{gbit} Gb/s", f"{compute * 1e3:.0f}", f"{comm * 1e3:.1f}",
                         f"{compute / (compute + comm):.0%}",
                         f"{step_seconds / (compute + comm):.1f}x"])
    return C.table(["processes", "link", "compute ms/step", "all-reduce ms/step",
                    "efficiency (no overlap)", "speed-up"], rows,
                   title="what the all-reduce means on a cluster (one process per machine)")


def main() -> None:
    args = parse_args()
    print(C.machine_line())
    with C.temp_dir("headstart-bench-ddp-") as root:
        data = C.write_animal_folder(root / "data", args.images)
        results = [run_world(n, data, root / f"run{n}", args, 29700 + n) for n in args.worlds]
    base = results[0]
    steps = math.ceil(base["train"] / args.batch_size)
    rows = [[r["n"], f"{r['prepare']:.1f}", f"{base['prepare'] / r['prepare']:.2f}x",
             f"{r['epoch']:.1f}", f"{base['epoch'] / r['epoch']:.2f}x", f"{r['wall']:.0f}",
             f"{r['val_acc']:.3f}"] for r in results]
    print(C.table(["processes", "frozen-feature pass s", "speed-up", "fine_tune epoch s",
                   "speed-up", "whole run s", "val acc"], rows,
                  title=f"{args.images} animal-mnist images, {BACKBONE} at {args.size} px, "
                        f"batch {args.batch_size} ({steps} steps an epoch), 1 thread each"))
    if base["n"] == 1 and len(results) > 1:
        per_rank = ", ".join(f"{r['dist']['per_process_batch']} at {r['n']} processes"
                             for r in results[1:])
        print(f"per-process batch: {args.batch_size} at 1 process, {per_rank} (effective "
              f"batch {args.batch_size} throughout)")
    n_params, nbytes = trained_bytes(args.size)
    print(f"all-reduce per step: {n_params:,} trained parameters = {nbytes / 2**20:.1f} MiB "
          "of fp32 gradients")
    best = measured_all_reduce(nbytes, 3 if args.quick else 10)
    print(f"measured here: one gloo all-reduce of those bytes between 2 local processes takes "
          f"{best * 1e3:.1f} ms (best of {3 if args.quick else 10}), "
          f"{nbytes * 8 / best / 1e9:.1f} Gb/s of gradient through loopback and memory copies")
    step = base["epoch"] / steps
    print(f"measured compute of one step on one process (epoch / steps, validation "
          f"included): {step * 1e3:.0f} ms")
    print(cluster_table(step, nbytes))


if __name__ == "__main__":
    main()
