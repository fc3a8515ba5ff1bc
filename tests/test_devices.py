"""Where a run computes (`--device`, headstart/devices.py): the names it takes, the clear
error where the device is not here, what metrics.json records, and, on a machine whose
PyTorch sees a CUDA GPU, the same runs on the GPU (skipped elsewhere)."""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import torch

from conftest import TINY
from headstart import api, devices
from headstart.exceptions import ConfigError
from headstart.training.config import TrainConfig

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="PyTorch sees no CUDA GPU on this machine")


def test_cpu_and_auto_without_a_gpu_are_the_cpu(monkeypatch):
    assert devices.resolve("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--device cuda: PyTorch sees no CUDA GPU.*--device "
                                          r"cpu"):
        devices.resolve("cuda")


def test_cuda_is_the_local_ranks_gpu_and_an_absent_index_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve("auto", local_rank=1, processes=2) == torch.device("cuda", 1)
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\), "
                                          r"numbered 0 to 1"):
        devices.resolve("cuda:2")
    # under torchrun: one GPU per process, never two processes on one
    with pytest.raises(ConfigError, match=r"process 2 of this machine has no GPU of its own"):
        devices.resolve("cuda", local_rank=2, processes=3)
    with pytest.raises(ConfigError, match=r"2 processes of this machine would share one GPU"):
        devices.resolve("cuda:0", local_rank=1, processes=2)


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "mps", 3])
def test_a_device_name_it_does_not_know_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"auto, cpu, cuda or cuda:N"):
        TrainConfig(device=bad).validate()
    assert TrainConfig(device=" CUDA:1 ").validate().device == "cuda:1"


def test_to_moves_tensors_inside_batches_and_leaves_the_rest():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "n_docs": 2,
             "parts": (torch.zeros(1), [torch.zeros(2)])}
    moved = devices.to(batch, torch.device("cpu"))
    assert moved["n_docs"] == 2 and moved["input_ids"] is batch["input_ids"]
    assert isinstance(moved["parts"], tuple) and isinstance(moved["parts"][1], list)


def test_precision_on_each_device(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert devices.autocast_dtype(cpu, "auto", cpu_bf16=False) is None
    assert devices.autocast_dtype(cpu, "bf16", cpu_bf16=True) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.autocast_dtype(gpu, "auto", cpu_bf16=False) is torch.float16
    assert devices.autocast_dtype(gpu, "fp32", cpu_bf16=False) is None
    assert devices.scaler(cpu, None).is_enabled() is False


@pytest.mark.skipif(CUDA, reason="the error is for machines without a GPU")
def test_cli_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(cli, tiny_data, tmp_path):
    line = cli("train", tiny_data, "--out", tmp_path / "run", "--device", "cuda",
               "--strategy", "linear_probe", *TINY).one_line_error()
    assert "--device cuda" in line and "--device cpu" in line
    assert not any(tmp_path.iterdir())


def test_cli_rejects_an_unknown_device_name(cli, tiny_data, tmp_path):
    line = cli("train", tiny_data, "--out", tmp_path / "run", "--device", "tpu",
               *TINY).one_line_error()
    assert "device" in line and "cuda:N" in line


def test_metrics_record_where_the_run_computed(cli, tiny_data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_data, "--out", run, "--strategy", "fine_tune", "--epochs", "1",
               "--device", "cpu", *TINY).rc == 0
    compute = json.loads((run / "metrics.json").read_text())["compute"]
    assert compute == {"device": "cpu", "autocast": None}


# -- on a GPU (skipped without one) ------------------------------------------------------------
def _train(data, device: str, strategy: str, **kw):
    """A run with a feature cache of its own: the CPU run never reads the GPU run's features."""
    os.environ["HEADSTART_CACHE"] = tempfile.mkdtemp(prefix="headstart-device-test-")
    cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy=strategy, epochs=2,
                      patience=10, device=device, precision="fp32", **kw)
    return api.train(data, config=cfg, progress=False, log=lambda *_: None)


@needs_cuda
@pytest.mark.parametrize("strategy", ["linear_probe", "fine_tune", "top_tune", "contrastive"])
def test_a_run_on_the_gpu_learns_as_on_the_cpu_and_is_saved_on_the_cpu(tiny_data, strategy,
                                                                        monkeypatch):
    """fp32 on both. The probe's head is the same to within the GPU's arithmetic (cuDNN's
    TF32 convolutions); a gradient run may take another discrete turn (an epoch kept, a mix),
    so it is held to the CPU run's accuracy."""
    monkeypatch.setenv("HEADSTART_CACHE", os.environ["HEADSTART_CACHE"])  # restored after
    gpu, cpu = _train(tiny_data, "cuda", strategy), _train(tiny_data, "cpu", strategy)
    assert gpu.metrics["compute"]["device"].startswith("cuda")
    assert gpu.metrics["compute"]["autocast"] is None
    assert {p.device.type for p in gpu.model.parameters()} == {"cpu"}
    assert gpu.metrics["val_accuracy"] >= cpu.metrics["val_accuracy"] - 0.13
    if strategy == "linear_probe":
        for k, v in cpu.model.state_dict().items():
            np.testing.assert_allclose(gpu.model.state_dict()[k].numpy(), v.numpy(),
                                       rtol=2e-2, atol=2e-3, err_msg=k)
    probs = api.predict_probs(gpu, sorted(str(p) for p in tiny_data.rglob("*.png"))[:4])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)


@needs_cuda
def test_texts_train_on_the_gpu(articles):
    texts, labels = articles
    cfg = TrainConfig(backbone="tiny_text", strategy="contrastive", epochs=1, device="cuda")
    result = api.train(texts, labels=labels, config=cfg, progress=False, log=lambda *_: None)
    assert result.metrics["compute"]["device"].startswith("cuda")
    assert result.metrics["compute"]["autocast"] in ("bfloat16", "float16")
    assert all(top for top in api.predict(result, texts[:3]))


@needs_cuda
def test_fp16_or_bf16_autocast_on_the_gpu_learns(tiny_data):
    result = _train(tiny_data, "cuda", "fine_tune")
    auto = api.train(tiny_data, config=TrainConfig(backbone="tiny_cnn", input_size=32,
                                                   strategy="fine_tune", epochs=2,
                                                   device="cuda"),
                     progress=False, log=lambda *_: None)
    assert auto.metrics["compute"]["autocast"] in ("bfloat16", "float16")
    assert auto.metrics["val_accuracy"] >= result.metrics["val_accuracy"] - 0.25
