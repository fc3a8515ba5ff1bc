"""What headstart needs to run under torchrun (PyTorch's own distributed engine): the process
group, rank and world, the epoch sampler, the per-process batch, collectives on Python objects,
DistributedDataParallel, and a clear stop when another process of the job dies.

Under torchrun every pass over data is collective: each process extracts its block of the
examples and the blocks are gathered (training/extract.py); gradient phases train on a
DistributedSampler's shard with DDP averaging the gradients; rank 0 alone writes the run
directory and the feature cache. Outside torchrun (no WORLD_SIZE) everything is a no-op."""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import math
import os
import shutil
import signal
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as td
from torch.utils.data import DistributedSampler

from ..exceptions import ProcessGroupError

LR_RULE = ("per-process batch = ceil(batch_size / world): the effective batch is batch_size "
           "(rounded up to a multiple of world), so the learning rates are those of one process")
SAMPLER = ("one permutation per epoch shared by every process, padded by wrapping to a "
           "multiple of world, then strided: each example once per epoch, plus at most "
           "world - 1 repeated when the training split does not divide evenly")
BATCHNORM = ("frozen groups stay in inference mode; pre-trained BatchNorm keeps its running "
             "statistics (--bn-stats auto/keep), so no batch statistics are computed; layers "
             "that update them (scratch, --bn-stats update) use each process's local batch "
             "(SyncBatchNorm does not run on CPU tensors), and DDP broadcasts rank 0's running "
             "statistics at every step and once more after each epoch's last step, so "
             "validation and the kept model use rank 0's")


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (no-op otherwise): gloo
    for CPU tensors, with NCCL for CUDA tensors where a GPU is present."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not td.is_available() or active():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(minutes=30)
    rank_, world_ = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    td.init_process_group(backend, store=_attempt_store(rank_, world_, timeout), rank=rank_,
                          world_size=world_, timeout=timeout)
    signal.signal(signal.SIGTERM, _stopped)
    atexit.register(_leave)
    # `kill -USR1 PID` prints where each thread of a process is (a job that seems stuck
    # waits in some collective: the stacks say which, and on which process)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _leave() -> None:
    """Leave the process group before the interpreter exits, as PyTorch asks: left to the
    interpreter's teardown, gloo's threads were still running when it destroyed them, and the
    process ended in SIGABRT ("terminate called without an active exception") after its work
    was done (seen on rank 1 in 2 of 3 full test runs, one run hung then, its partner
    launcher waiting for the failed one)."""
    if active():
        with contextlib.suppress(Exception):
            td.destroy_process_group()


def finish_job() -> None:
    """The end of a command under torchrun: every process waits here until all are done, so
    that none leaves while rank 0 still writes the run (no-op outside torchrun)."""
    if active():
        with guard():
            td.barrier()


def exit_job(code: int) -> None:
    """End this process of a torchrun job now, with `code`, skipping the interpreter's and
    the C++ libraries' teardown (no-op outside torchrun). Leaving the group and letting the
    interpreter exit still ended a process in SIGABRT ("terminate called without an active
    exception", a gloo thread destroyed while running) after its work was done, in about 1
    in 8 restarted jobs; torchrun then stopped its partner, which was still writing the run.
    Nothing is left to tear down by then: the run is written, the streams are flushed here,
    and the operating system closes the sockets."""
    if not active():
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a stop now needs no message
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _attempt_store(rank_: int, world_: int, timeout: timedelta):
    """The store torch's env:// rendezvous gives (torchrun's agent store, or rank 0's own
    outside torchrun), its keys prefixed by torchrun's restart count. After a `--max-restarts`
    restart the new processes otherwise read the addresses the dead ones published under the
    same keys, and gloo's connection to them is refused (seen in 4 of 6 restarts of a
    two-process job; none with the prefix)."""
    store, _, _ = next(td.rendezvous("env://", rank_, world_, timeout=timeout))
    store.set_timeout(timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return td.PrefixStore(f"headstart/attempt_{attempt}", store)


def _stopped(signum, frame) -> None:
    """torchrun stops the surviving processes with SIGTERM when one of them fails."""
    raise ProcessGroupError(
        f"process {rank()} of the torchrun job was stopped because another process failed "
        "(its message and torchrun's summary name it); progress up to the last finished epoch "
        "is saved: run the same command again to resume")


@contextlib.contextmanager
def guard():
    """A collective that fails because another process is gone (gloo: connection closed or
    reset; a timeout) becomes one clear error."""
    try:
        yield
    except RuntimeError as e:
        if not active() or not _lost_peer(e):
            raise
        detail = " ".join(str(e).split())[:160]
        raise ProcessGroupError(
            f"process {rank()} of the torchrun job lost contact with the others ({detail}): "
            "another process stopped (its message and torchrun's summary name it); progress "
            "up to the last finished epoch is saved: run the same command again to resume"
        ) from None


def _lost_peer(e: RuntimeError) -> bool:
    """A collective's error (gloo raises plain RuntimeErrors naming its transport)."""
    text = str(e)
    return isinstance(e, td.DistError) or any(
        word in text for word in ("gloo", "Connection reset", "Connection closed", "NCCL"))


def active() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if active() else 0


def world() -> int:
    return td.get_world_size() if active() else 1


def local_rank() -> int:
    """This process's rank on its machine (one process per machine writes machine-local
    files, such as the exported ONNX graph in the cache)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def local_world() -> int:
    """How many processes of the job run on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        td.barrier()


def describe() -> dict | None:
    """What metrics.json records of a job of more than one process (None for one)."""
    if world() == 1:
        return None
    return {"world": world(), "backend": str(td.get_backend()),
            "nodes": int(os.environ.get("GROUP_WORLD_SIZE", "1")),
            "lr_rule": LR_RULE, "sampler": SAMPLER, "batchnorm": BATCHNORM}


# -- the data of a gradient epoch ---------------------------------------------------------------
class EpochSampler(DistributedSampler):
    """torch's DistributedSampler with headstart's epoch order: one permutation of the
    training split seeded by (seed, epoch) (numpy's, as one process uses it, so that one and
    several processes see the same global batches), padded by wrapping to a multiple of the
    world size, this process's share strided (rank, rank + world, ...)."""

    def __init__(self, n: int, *, seed: int, epoch: int = 0, replicas: int | None = None,
                 index: int | None = None) -> None:
        super().__init__(range(n), num_replicas=replicas or world(),
                         rank=rank() if index is None else index, shuffle=True, seed=seed,
                         drop_last=False)
        self.set_epoch(epoch)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.dataset))
        order = np.resize(order, self.total_size)  # pad by wrapping, as DistributedSampler does
        return iter(order[self.rank::self.num_replicas].tolist())


def shard(indices, *, seed: int, epoch: int) -> list[int]:
    """This process's share of a shuffled epoch over `indices` (see EpochSampler)."""
    idx = np.asarray(list(indices))
    return idx[list(EpochSampler(len(idx), seed=seed, epoch=epoch))].tolist()


def per_rank_batch(batch_size: int) -> int:
    """Examples per step in each process: the effective batch stays batch_size (LR_RULE)."""
    return max(1, math.ceil(batch_size / world()))


def block(n: int) -> range:
    """This process's contiguous block of n examples (extraction: each example once)."""
    edges = np.linspace(0, n, world() + 1).round().astype(int)
    return range(int(edges[rank()]), int(edges[rank() + 1]))


# -- collectives ---------------------------------------------------------------------------------
def all_reduce_sum(*values: float) -> tuple[float, ...]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    td.all_reduce(t)
    return tuple(t.tolist())


def gather(obj) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not active():
        return [obj]
    out = [None] * world()
    td.all_gather_object(out, obj)
    return out


def from_main(obj):
    """Rank 0's `obj` on every process (a resumed checkpoint: one source of truth, which
    also reaches machines that do not share rank 0's file system)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def shared_tmpdir(prefix: str = "headstart-"):
    """A temporary folder of the same path in every process (rank 0 names it; the first
    process of each machine creates and removes it), for one process per machine to write
    into and the others to read (an ONNX graph)."""
    if not active():
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    path = Path(from_main(tempfile.mkdtemp(prefix=prefix) if is_main() else None))
    if local_rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    barrier()
    try:
        yield path
    except BaseException:  # the job is going down: no barrier the others may never reach
        if local_rank() == 0:
            shutil.rmtree(path, ignore_errors=True)
        raise
    barrier()  # every process is done with it
    if local_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in every process. DDP broadcasts them
    before each step's forward, so after an epoch's last step each process holds its own
    batch's update: without this, the processes would validate, keep and score different
    models (and name their ONNX graphs differently)."""
    if not active():
        return
    for buf in model.buffers():
        td.broadcast(buf, src=0)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel over the model (frozen parameters need no gradient)."""
    if not active():
        return model
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
