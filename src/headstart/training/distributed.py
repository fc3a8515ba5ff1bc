"""What the trainer needs to run unchanged under torchrun: rank, sharding, reduction, DDP."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as td


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and td.is_available() and not active():
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def active() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if active() else 0


def world() -> int:
    return td.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(indices, *, seed: int, epoch: int) -> list[int]:
    """This process's share of a shuffled epoch (every process shuffles identically)."""
    idx = np.asarray(list(indices))
    order = np.random.default_rng([seed, epoch]).permutation(len(idx))
    idx = idx[order]
    n = world()
    if n > 1:
        per = int(np.ceil(len(idx) / n))
        idx = np.resize(idx, per * n)[rank()::n]  # pad by wrapping so shards are equal
    return idx.tolist()


def all_reduce_sum(*values: float) -> tuple[float, ...]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    td.all_reduce(t)
    return tuple(t.tolist())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    if not active():
        return model
    return torch.nn.parallel.DistributedDataParallel(model)  # frozen params need no grad
