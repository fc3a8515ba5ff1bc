"""`kill -9` at several points of a real training run, then the same command again: the resumed
run is byte for byte the run that was never interrupted (model.safetensors), with the same
history, and nothing is left behind (the killed writer's lock is taken over and removed)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import leftovers, write_folder

ARGS = ["--backbone", "tiny_cnn", "--image-size", "48", "--strategy", "fine_tune", "--epochs",
        "6", "--patience", "10", "--batch-size", "4", "--no-augment", "--quiet"]


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", "train", str(data), "--out", str(out),
            *ARGS]


def rows(path: Path) -> int:
    try:
        with open(path, newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)
    except OSError:
        return 0


def run_until(cmd: list[str], env: dict, when) -> int:
    """Start the command and kill -9 it as soon as `when()` holds. Returns the exit status
    (-SIGKILL when killed, 0 when it finished first)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < 240:
            if when():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_kill_9_at_several_points_resumes_to_the_uninterrupted_model(tmp_path):
    data = write_folder(tmp_path / "data", ("a", "b", "c"), 8, size=48, seed=5)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.Popen(command(data, tmp_path / "straight" / "run"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = tmp_path / "killed"
    out, partial = runs / "run", runs / ".run.partial"
    cmd = command(data, out)
    history = partial / "history.csv"
    kills = [run_until(cmd, env, lambda: (runs / ".run.lock").exists()),  # reading the data
             run_until(cmd, env, lambda: rows(history) >= 1),  # after the head phase
             run_until(cmd, env, lambda: rows(history) >= 3),  # in the middle of fine-tuning
             run_until(cmd, env, lambda: rows(history) >= 6)]  # near the end
    assert kills == [-signal.SIGKILL] * 4, kills
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "resuming the interrupted run" in final.stdout
    assert "is no longer running" in final.stdout  # the killed writer's lock, taken over
    assert straight.wait(timeout=240) == 0, straight.stderr.read()[-2000:]
    ref = tmp_path / "straight" / "run"
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                       for r in csv.DictReader(open(p / "history.csv", newline=""))]
    assert strip(out) == strip(ref) and len(strip(ref)) == 7  # head + 6 epochs
    assert leftovers(runs) == ["run"]
