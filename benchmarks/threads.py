"""Thread policies for frozen feature extraction, side by side: EfficientNet-Lite0's ONNX
graph (the one headstart's FeatureExtractor builds) and eager PyTorch, on the same
pre-processed batches, under each candidate policy, with the machine as it is ("idle") and
with competing busy processes started by this script (a 1-thread matmul loop each, as
another job on the machine would be).

    nice -n 10 python benchmarks/threads.py            # 224 px, 6 rounds, 2 busy processes
    nice -n 10 python benchmarks/threads.py --quick    # 112 px, 3 rounds

In each round every policy runs the same batches back to back in a rotated order, so the
ratios compare like with like when other work shares the CPU. Reported: the median images
per second per policy and condition, and the median per-round ratio to the first policy
(ONNX Runtime's defaults: every core, spinning). "headstart" is headstart.threads' policy,
measured afresh in each condition (the rule it applies, and what it chose, are printed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import _common as C

BUSY = ("import numpy as np\na = np.random.rand(512, 512)\n"
        "while True:\n    a @ a\n")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="112 px, 3 rounds")
    p.add_argument("--size", type=int, default=None, help="input size (default 224)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 6)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=2, help="batches timed per policy and round")
    p.add_argument("--busy", type=int, default=None,
                   help="competing busy processes in the loaded condition (default: the cores)")
    a = p.parse_args()
    a.size = a.size or (112 if a.quick else 224)
    a.rounds = a.rounds or (3 if a.quick else 6)
    return a


def candidates(cores: int) -> dict[str, dict]:
    """policy name -> threads and spinning; the first is the reference of the ratios."""
    return {f"ort {cores} threads, spinning": {"engine": "ort", "threads": cores, "spin": True},
            f"ort {cores} threads, no spinning": {"engine": "ort", "threads": cores,
                                                  "spin": False},
            "ort 1 thread, no spinning": {"engine": "ort", "threads": 1, "spin": False},
            "ort headstart": {"engine": "ort", "threads": None, "spin": None},
            f"torch {cores} threads": {"engine": "torch", "threads": cores},
            "torch 1 thread": {"engine": "torch", "threads": 1},
            "torch headstart": {"engine": "torch", "threads": None}}


def session(path, threads: int, spin: bool):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def runner(spec: dict, policy, backbone, path):
    """A function that runs one batch under `spec` (None threads: headstart's policy)."""
    import torch
    if spec["engine"] == "ort":
        s = session(path, spec["threads"] or policy.onnxruntime,
                    policy.spinning if spec["spin"] is None else spec["spin"])
        return lambda x: s.run(None, {"images": x})[0]
    threads = spec["threads"] or policy.torch

    def run(x):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return backbone(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(before)
    return run


def measure(runners: dict, batches, rounds: int) -> dict[str, list[float]]:
    """Images per second of each runner in each round, the order rotated round by round."""
    names = list(runners)
    rates = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for x in batches:
                runners[n](x)
            rates[n].append(sum(len(x) for x in batches) / (time.perf_counter() - t0))
    return rates


def start_busy(n: int) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", BUSY], env=env) for _ in range(n)]


def stop(procs) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main() -> None:
    args = parse_args()
    from headstart import threads  # first: headstart's OMP_WAIT_POLICY before torch loads
    import torch
    from headstart.backbones import create_backbone
    from headstart.training.features import export_onnx
    cores = threads.available_cores()
    backbone = create_backbone("efficientnet_lite0", input_size=args.size).eval()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((args.batch_size, 3, args.size, args.size)).astype(np.float32)
               for _ in range(args.batches)]
    specs = candidates(cores)
    print(C.machine_line())
    print(f"efficientnet_lite0 at {args.size} px, {args.batches} batches of {args.batch_size} "
          f"per policy and round, {args.rounds} rounds; {cores} cores available")
    results = {}
    with C.temp_dir() as tmp:
        path = tmp / "lite0.onnx"
        export_onnx(backbone, path)
        for condition, busy in (("idle", 0), ("busy", args.busy or cores)):
            procs = start_busy(busy)
            try:
                time.sleep(1.0 if busy else 0.0)  # the competitors are running
                policy = threads.measure_policy()
                print(f"{condition}: {busy} busy processes; headstart's policy: {policy}")
                runners = {n: runner(s, policy, backbone, path) for n, s in specs.items()}
                for r in runners.values():  # warm-up
                    r(batches[0])
                results[condition] = measure(runners, batches, args.rounds)
            finally:
                stop(procs)
    ref = next(iter(specs))
    rows = []
    for name in specs:
        row = [name]
        for c in ("idle", "busy"):
            got = results[c]
            row += [C.median(got[name]),
                    C.median([a / b for a, b in zip(got[name], got[ref])])]
        rows.append(row)
    print(C.table(["policy", "idle img/s", "idle ratio", "busy img/s", "busy ratio"], rows,
                  title=f"\nthroughput (ratio: per-round, to '{ref}')"))
    torch.set_num_threads(cores)


if __name__ == "__main__":
    main()
