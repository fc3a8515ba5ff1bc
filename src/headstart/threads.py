"""One thread policy for the whole process: how many intra-op threads torch, ONNX Runtime and
the BLAS under numpy and scikit-learn use, and whether ONNX Runtime's idle threads spin.

The rule (benchmarks/threads.py measures the candidates side by side, idle and with
competing busy processes; benchmarks/README.md has the figures):

- no spinning, anywhere: a spinning thread holds a core it is not using, which costs 1.2-1.6x
  when another process wants that core, and about 5% when the machine is idle. torch's OpenMP
  threads already wait passively (OMP_WAIT_POLICY=PASSIVE, set in headstart/__init__.py).
- threads = the cores this process may run on that other processes are not keeping busy,
  measured once, over a tenth of a second, when the policy is first asked for (at least 1):
  on a shared machine a thread whose core is taken waits for it at every synchronisation.
- `HEADSTART_THREADS=N` fixes N threads for all three instead; so does `OMP_NUM_THREADS=N`,
  the variable torch itself honours, when HEADSTART_THREADS is not set (a count the user
  fixed also keeps a resumed run's arithmetic that of the run it resumes).

`apply()` sets it (the training, features, export and serve paths call it once), `record()`
says what is in effect, as written into every run's metrics.json.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass

from .exceptions import ConfigError

SAMPLE_S = 0.1  # how long the CPU's use by other processes is measured


@dataclass(frozen=True)
class ThreadPolicy:
    torch: int
    onnxruntime: int
    spinning: bool
    blas: int
    rule: str  # why these numbers

    def __str__(self) -> str:
        return (f"{self.torch} thread(s) for torch, ONNX Runtime and BLAS, "
                f"{'spinning' if self.spinning else 'no spinning'} ({self.rule})")


def available_cores() -> int:
    """The cores this process may run on (its affinity, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_elsewhere(seconds: float = SAMPLE_S) -> float | None:
    """How many cores other processes keep busy, from /proc/stat over `seconds` (this process
    sleeps meanwhile); None where there is no /proc/stat."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total, idle = total1 - total0, idle1 - idle0
    return max(0.0, (1 - idle / total) * (os.cpu_count() or 1)) if total > 0 else 0.0


def measure_policy() -> ThreadPolicy:
    """The policy the rule gives now (see the module's docstring)."""
    name = next((v for v in ("HEADSTART_THREADS", "OMP_NUM_THREADS")
                 if os.environ.get(v, "").strip()), None)
    if name is not None:
        fixed = os.environ[name].strip()
        if not fixed.isdigit() or int(fixed) < 1:
            raise ConfigError(f"{name} must be a whole number of threads, 1 or more, "
                              f"got {fixed!r}; unset it to let headstart choose")
        n, rule = int(fixed), name
    else:
        cores, busy = available_cores(), busy_elsewhere()
        if busy is None:
            n, rule = cores, f"{cores} cores"
        else:
            n = max(1, min(cores, round(cores - busy)))
            rule = f"{cores} cores, {busy:.1f} busy with other processes"
    return ThreadPolicy(torch=n, onnxruntime=n, spinning=False, blas=n, rule=rule)


@functools.lru_cache(maxsize=1)
def policy() -> ThreadPolicy:
    """The process's policy: measured once, the first time it is asked for."""
    return measure_policy()


@functools.lru_cache(maxsize=1)
def apply() -> ThreadPolicy:
    """Set the policy for torch and the BLAS libraries, once per process (a later call returns
    it and changes nothing, so a caller's own torch.set_num_threads afterwards stands)."""
    import torch  # deferred on purpose: the policy is read by commands that need no torch
    from threadpoolctl import threadpool_limits

    p = policy()
    torch.set_num_threads(p.torch)
    threadpool_limits(p.blas, user_api="blas")  # process-wide: not used as a context
    return p


def session_options(opts, threads: int | None = None):
    """An ONNX Runtime SessionOptions set to the policy (`threads` overrides its count)."""
    p = policy()
    opts.intra_op_num_threads = int(threads or p.onnxruntime)
    opts.add_session_config_entry("session.intra_op.allow_spinning",
                                  "1" if p.spinning else "0")
    return opts


def record() -> dict:
    """What is in effect, for metrics.json: torch's threads as torch reports them, the BLAS
    threads as threadpoolctl reports them, and ONNX Runtime's as the policy sets them."""
    import torch  # deferred on purpose (see apply)
    from threadpoolctl import threadpool_info

    p = policy()
    blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"torch": torch.get_num_threads(), "onnxruntime": p.onnxruntime,
            "spinning": p.spinning, "blas": max(blas) if blas else None, "rule": p.rule,
            "policy": {k: v for k, v in asdict(p).items() if k != "rule"}}
