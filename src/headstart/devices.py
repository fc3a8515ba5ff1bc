"""Where a run computes: the CPU, or a CUDA GPU when PyTorch sees one (`--device auto`, the
default), and at which precision its gradient steps run.

One rule for every tensor: the model is placed on the run's device once (training/pipeline.py),
and each piece of code that feeds it (feature extraction, the head, the trainer's batches)
moves its inputs to the device of the module it calls (`of`, `to`) and brings the outputs
back to the CPU, where features are cached, heads are fitted and runs are written. On the CPU
every move is a no-op, so the CPU and GPU paths are one path. Under torchrun each process of
a machine takes the GPU of its local rank."""
from __future__ import annotations

import contextlib
import itertools

import torch

from .exceptions import ConfigError


def resolve(name: str = "auto", *, local_rank: int = 0, processes: int = 1) -> torch.device:
    """The device `--device NAME` means on this machine (auto, cpu, cuda or cuda:N, as
    TrainConfig checked it); a ConfigError naming the fix where it is not here. `cuda` without
    an index is the local rank's GPU (one per process); `processes` is how many processes of
    the job run on this machine."""
    name = str(name or "auto").strip().lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(f"--device {name}: PyTorch sees no CUDA GPU on this machine (torch "
                          f"{torch.__version__}, {build}); use --device cpu or --device auto")
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else local_rank
    if processes > 1 and ":" in name:
        raise ConfigError(f"--device {name}: {processes} processes of this machine would share "
                          "one GPU; use --device cuda (each process takes the GPU of its local "
                          "rank)")
    if index >= count and ":" not in name:
        raise ConfigError(f"--device {name}: process {local_rank} of this machine has no GPU "
                          f"of its own (the machine has {count}); start at most {count} "
                          "processes per machine (torchrun --nproc-per-node), or use --device cpu")
    if index >= count:
        raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), numbered "
                          f"0 to {count - 1}; use one of them, or --device auto")
    return torch.device("cuda", index)


def of(module: torch.nn.Module) -> torch.device:
    """The device a module's weights are on (the CPU for a module without any)."""
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def to(obj, device: torch.device):
    """Tensors in `obj` (a tensor, or dicts, lists and tuples of them, such as a text
    batch) on `device`; everything else as it is. The same object on the same device. Copies
    are blocking: a non-blocking copy to the CPU could be read before it lands."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device)
    if isinstance(obj, dict):
        return {k: to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to(v, device) for v in obj)
    return obj


def autocast_dtype(device: torch.device, precision: str, cpu_bf16: bool) -> torch.dtype | None:
    """The autocast precision of gradient steps (None: fp32). On a GPU, `auto` is bf16 where it
    has it and fp16 (with loss scaling, see `scaler`) where it does not; on the CPU it is
    bf16 where `cpu_bf16` (batches.use_bf16: the CPU has it and the inputs are large)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        # native bf16 only (Ampere and later): emulated bf16 is slow, fp16 is native
        if precision == "bf16" or torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16
        return torch.float16
    return torch.bfloat16 if cpu_bf16 else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast on the device's type at `dtype`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """fp16 gradients need loss scaling (they underflow); bf16 and fp32 do not: a disabled
    scaler, whose calls pass through."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def describe(device: torch.device, dtype: torch.dtype | None) -> dict:
    """What metrics.json records of where a run computed."""
    out = {"device": str(device), "autocast": None if dtype is None else str(dtype).split(".")[-1]}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
