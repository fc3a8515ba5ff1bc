"""A bounded loopback load test of `headstart serve`: N concurrent clients x M requests each,
posting real animal-mnist images to /predict of a real server (a `headstart serve` subprocess
on 127.0.0.1), with micro-batching on and off, side by side.

    python benchmarks/serve_load.py [--run RUN] [--clients 8] [--requests 25] [--rounds 2]

Without --run it trains the README's demo-sized run (linear_probe, EfficientNet-Lite0, 224 px,
10 images per class) in a temporary folder and exports it. Every request goes to 127.0.0.1
only; the test stops by itself (M requests per client, and a deadline per mode).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _common import REPO, machine_line, table, temp_cache, temp_dir


def demo_run(root: Path, size: int) -> Path:
    from headstart import api
    from headstart.data.shipped import write_animal_mnist
    from headstart.export import export_run

    data = write_animal_mnist(root / "am10", per_class=10)
    run = root / "run"
    api.train(data / "train", run, config=api.TrainConfig(
        backbone="efficientnet_lite0", strategy="linear_probe", input_size=size),
        progress=False, log=lambda *_: None)
    export_run(api.load(run), log=print)
    return run


def real_images(n: int) -> list[bytes]:
    """PNG bytes of n animal-mnist hold-out images."""
    from PIL import Image

    from headstart.data.shipped import load_animal_mnist, split_indices

    images, labels = load_animal_mnist()
    _, test = split_indices(labels, images)
    out = []
    for i in test[::max(1, len(test) // n)][:n]:
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, max_batch: int, window_ms: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "headstart.cli.main", "serve", str(run), "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(max_batch), "--batch-window-ms",
           str(window_ms)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the server did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(url: str, images: list[bytes], clients: int, requests: int,
         deadline_s: float) -> dict:
    """clients threads, each sending `requests` POSTs one after another; latencies in ms."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for j in range(requests):
                if time.monotonic() > stop_at:
                    with lock:
                        errors.append("not sent: deadline")
                    continue
                body = images[(k * requests + j) % len(images)]
                t = time.perf_counter()
                try:
                    r = c.post("predict", files={"file": ("x.png", body, "image/png")})
                    ok = r.status_code == 200 and "predictions" in r.json()
                    problem = None if ok else f"{r.status_code}: {r.text[:80]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    (errors.append(problem) if problem else latencies.append(ms))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"rps": len(latencies) / wall, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "errors": len(errors), "ok": len(latencies),
            "wall": wall, "first_error": errors[0] if errors else ""}


def one_mode(run: Path, images, args, *, max_batch: int) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_server(run, port, max_batch, args.window_ms)
    try:
        wait_healthy(url, proc)
        load(url, images, 2, 3, 60)  # warm-up: sessions, thread pools, first batches
        before = httpx.get(url + "health").json()
        result = load(url, images, args.clients, args.requests, args.deadline)
        after = httpx.get(url + "health").json()
    finally:
        stop_server(proc)
    batches = after["batches"] - before["batches"]
    result["mean_batch"] = (after["inputs"] - before["inputs"]) / batches if batches else 0.0
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="an exported run (default: train and export a demo run)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs, order alternating")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--window-ms", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=224, help="demo run's input size")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds per mode at most")
    args = p.parse_args()
    print(machine_line())
    with temp_cache(), temp_dir() as root:
        run = Path(args.run) if args.run else demo_run(root, args.image_size)
        images = real_images(64)
        rows = []
        for r in range(args.rounds):
            modes = [("on", args.max_batch), ("off", 1)]
            for name, mb in (modes if r % 2 == 0 else modes[::-1]):
                res = one_mode(run, images, args, max_batch=mb)
                rows.append([f"{name} (max {mb})", r + 1, f"{args.clients}x{args.requests}",
                             res["rps"], res["p50"], res["p99"], res["errors"],
                             res["mean_batch"]])
                if res["errors"]:
                    print(f"  first error: {res['first_error']}")
        size = json.loads((run / "model.json").read_text())["input_size"]
    print(table(["micro-batching", "round", "clients x req", "req/s", "p50 ms", "p99 ms",
                 "errors", "mean batch"], rows,
                title=f"POST /predict of real images to a {size}px model on 127.0.0.1"))


if __name__ == "__main__":
    main()
