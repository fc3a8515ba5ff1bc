"""The trainer runs unchanged under torchrun: two CPU processes (gloo), one run directory."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TINY


@pytest.mark.parametrize("strategy,port", [("fine_tune", "29517"), ("contrastive", "29518")])
def test_torchrun_two_processes_write_one_complete_run(strategy, port, make_folder, tmp_path):
    data = make_folder(classes=("a", "b"), n=8)
    out = tmp_path / "runs" / "ddp"
    # a fresh cache: both ranks export the same ONNX file at once (unique temporary names)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADSTART_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", port, "-m", "headstart.cli.main", "train", str(data), "--out",
         str(out), "--strategy", strategy, "--epochs", "2", *TINY],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ONNX Runtime unavailable" not in proc.stderr, proc.stderr[-2000:]
    assert not (out.parent / ".ddp.lock").exists()
    assert proc.stdout.count("done in") == 1  # only rank 0 reports
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml", "history.csv", "labels.json", "metrics.json", "model.safetensors"}
    assert not (out.parent / ".ddp.partial").exists()
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 1 + 2  # header, head phase, two gradient epochs
    phases = [row.split(",")[0] for row in history[1:]]
    assert phases == (["head", "fine_tune", "fine_tune"] if strategy == "fine_tune"
                      else ["contrastive", "contrastive", "head"])
