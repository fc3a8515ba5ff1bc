"""headstart under torchrun (gloo, CPU, two processes): the epoch sampler's shards, extraction
sharded and gathered (each example once, one ONNX export, the cache written by rank 0), the
same metrics as one process, a killed job that resumes on both ranks, one run directory."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
import torch.multiprocessing as mp
from conftest import TINY, history_rows, write_folder

from headstart.training import distributed as dist

ENV = {"OMP_NUM_THREADS": "1"}


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(*args, port: str, **kw) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", port, "-m", "headstart", *map(str, args)]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun's agent and its workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def finish(*procs: subprocess.Popen, timeout: float) -> list[tuple[str, str]]:
    """(stdout, stderr) of each job; a job still running after `timeout` seconds fails the
    test with where each of its processes was (SIGUSR1: headstart's faulthandler stacks)."""
    deadline = time.monotonic() + timeout
    try:
        return [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        stuck = [pid for p in procs for pid in _descendants(p.pid)]
        for pid in stuck:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR1)
        time.sleep(3)
        for pid in [*stuck, *(p.pid for p in procs)]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        errs = [p.communicate()[1] for p in procs]
        pytest.fail(f"the torchrun job ran past {timeout}s; the stacks of its processes:\n"
                    + "\n".join(e[-8000:] for e in errs))


def run_job(cmd: list[str], *, env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    (out, err), = finish(proc, timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# -- the epoch sampler ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(30, 2), (31, 2), (31, 4), (5, 3)])
def test_epoch_shards_cover_every_example_once_plus_at_most_world_minus_one(n, world):
    one = list(dist.EpochSampler(n, seed=7, epoch=3, replicas=1, index=0))
    shards = [list(dist.EpochSampler(n, seed=7, epoch=3, replicas=world, index=r))
              for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal steps in every process
    counts = Counter(i for s in shards for i in s)
    assert set(counts) == set(range(n))
    assert sum(counts.values()) - n == (-n) % world < world  # the padding, by wrapping
    # the processes' k-th examples are one process's consecutive examples: the same batches
    interleaved = [s[k] for k in range(len(shards[0])) for s in shards]
    assert interleaved[:n] == one
    assert list(dist.EpochSampler(n, seed=7, epoch=4, replicas=1, index=0)) != one


def test_per_process_batch_keeps_the_effective_batch_and_blocks_partition():
    assert dist.per_rank_batch(32) == 32 and dist.block(10) == range(10)  # one process


# -- two processes in this test, over gloo ---------------------------------------------------------
def _worker(r: int, port: str, tmp: str, dropout_off: bool) -> None:
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, HEADSTART_CACHE=str(Path(tmp) / "cache"), **ENV)
    torch.set_num_threads(1)
    if dropout_off:
        torch.nn.Dropout.forward = lambda self, x: x
    dist.init_from_env()
    result = {"extraction": _extract(Path(tmp)), "train": _train(Path(tmp))}
    (Path(tmp) / f"rank{r}.json").write_text(json.dumps(result))


def _extract(tmp: Path) -> dict:
    from headstart.backbones import create_backbone
    from headstart.data.datasets import from_folder
    from headstart.training import FeatureCache, FeatureExtractor, features
    from headstart.training.config import TrainConfig
    from headstart.training.extract import extract_features
    from headstart.training.model import preprocess_for

    exports, puts, rows = [], [], []
    real_export, real_call = features.export_onnx, FeatureExtractor.__call__
    features.export_onnx = lambda *a: (exports.append(1), real_export(*a))[1]
    FeatureExtractor.__call__ = lambda self, b: (rows.append(len(b)), real_call(self, b))[1]
    extractor = FeatureExtractor(create_backbone("tiny_cnn", input_size=32),
                                 onnx_dir=tmp / "onnx")
    cache = FeatureCache(tmp / "features.sqlite")
    real_put = cache.put_many
    cache.put_many = lambda key, items: (puts.append(len(items)), real_put(key, items))[1]
    try:
        ex = extract_features(from_folder(tmp / "data"), extractor,
                              preprocess_for(TrainConfig(backbone="tiny_cnn", input_size=32)),
                              views=2, cache=cache, progress=False)
    finally:
        features.export_onnx, FeatureExtractor.__call__ = real_export, real_call
    return {"exports": len(exports), "rows": sum(rows), "puts": sum(puts),
            "engine": extractor.engine, "per_rank": ex.per_rank, "kept": ex.kept,
            "features": ex.features.round(5).tolist()}


def _train(tmp: Path) -> dict:
    from headstart import api
    from headstart.training.config import TrainConfig
    out = {}
    for strategy in ("linear_probe", "fine_tune", "contrastive"):
        cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy=strategy,
                          epochs=3 if strategy != "contrastive" else 1, batch_size=8,
                          patience=10)
        run = tmp / "runs" / strategy
        result = api.train(tmp / "data", run, config=cfg, progress=False, log=lambda *_: None)
        out[strategy] = {"history": result.history, "metrics": result.metrics,
                         "wrote": result.run_dir is not None}
    dist.barrier()  # rank 0 has committed the runs
    report, _ = api.evaluate(api.load(tmp / "runs" / "fine_tune"), tmp / "data", progress=False)
    return {**out, "evaluate": report}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One 2-process job (spawned here, not torchrun) that extracts and trains, with the
    head's dropout off: dropout masks are the only randomness drawn per step."""
    tmp = tmp_path_factory.mktemp("ddp")
    write_folder(tmp / "data", ("a", "b", "c"), 14, size=32, seed=11)  # 42: 30 train, 12 val
    mp.spawn(_worker, args=(free_port(), str(tmp), True), nprocs=2, join=True)
    return tmp, [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def test_extraction_runs_each_example_once_and_rank_0_writes(two_processes):
    tmp, ranks = two_processes
    ex = [r["extraction"] for r in ranks]
    n = 42
    assert [e["rows"] for e in ex] == [2 * 21, 2 * 21]  # its block, two flip views
    assert ex[0]["per_rank"] == [21, 21] and ex[0]["kept"] == list(range(n))
    assert [e["exports"] for e in ex] == [1, 0]  # rank 0 exports, rank 1 loads after a barrier
    assert [e["engine"] for e in ex] == ["onnxruntime", "onnxruntime"]
    assert [e["puts"] for e in ex] == [2 * n, 0]  # the cache written by rank 0 alone
    with sqlite3.connect(tmp / "features.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 2 * n
    assert ex[0]["features"] == ex[1]["features"]


def test_two_processes_give_one_process_metrics(two_processes, monkeypatch, tmp_path):
    """linear_probe: the same numbers (its head is fitted on the gathered features); fine_tune
    with dropout off: the same global batches and averaged gradients, within 1e-4."""
    from headstart import api
    from headstart.training.config import TrainConfig
    tmp, ranks = two_processes
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    threads = torch.get_num_threads()
    for strategy in ("linear_probe", "fine_tune"):
        cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy=strategy, epochs=3,
                          batch_size=8, patience=10)
        torch.set_num_threads(1)  # as each process (other float sums move Adam's tiny steps)
        try:
            one = api.train(tmp / "data", config=cfg, progress=False, log=lambda *_: None)
        finally:
            torch.set_num_threads(threads)
        two = [r["train"][strategy] for r in ranks]
        assert [t["wrote"] for t in two] == [True, False]
        assert two[0]["metrics"]["val_accuracy"] == one.metrics["val_accuracy"]
        tol = 1e-6 if strategy == "linear_probe" else 1e-4
        for a, b in zip(one.history, two[0]["history"], strict=True):
            for key in ("train_loss", "val_loss"):
                assert abs(a[key] - b[key]) < tol, (strategy, key, a, b)
        d = two[0]["metrics"]["distributed"]
        assert d["world"] == 2 and d["per_process_batch"] == 4 and d["effective_batch"] == 8
        assert sum(d["extracted_per_process"]) <= 42 and d["resumed_from"] == [None, None]
        if strategy == "fine_tune":  # evaluate: each process its block, the same report
            report, _ = api.evaluate(api.load(tmp / "runs" / strategy), tmp / "data",
                                     progress=False)
            assert ranks[0]["train"]["evaluate"] == ranks[1]["train"]["evaluate"] == \
                json.loads(json.dumps(report))
    contrastive = [r["train"]["contrastive"] for r in ranks]  # pairs, through DDP too
    assert [t["wrote"] for t in contrastive] == [True, False]
    assert [h["phase"] for h in contrastive[0]["history"]] == ["contrastive", "head"]
    assert sorted(p.name for p in (tmp / "runs").iterdir()) == [
        "contrastive", "fine_tune", "linear_probe"]


def _real_fine_tune(r: int | None, port: str, data: str, cache: str, out: str) -> None:
    """fine_tune of EfficientNet-Lite0 (shipped weights) on animal-mnist at 64 px, as process
    `r` of two (None: alone), with dropout and drop-connect off: their masks are the only
    per-step draws, and they differ between one process and two."""
    import efficientnet_lite_pytorch.model as effnet

    from headstart import api
    from headstart.training.config import TrainConfig
    if r is not None:
        os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    os.environ.update(HEADSTART_CACHE=cache, **ENV)
    torch.set_num_threads(1)
    torch.nn.Dropout.forward = lambda self, x: x
    effnet.drop_connect = lambda x, p, training: x
    dist.init_from_env()
    cfg = TrainConfig(strategy="fine_tune", input_size=64, cut="none", epochs=2,
                      batch_size=16, patience=10)
    res = api.train(data, config=cfg, progress=False, log=lambda *_: None)
    Path(out.replace("RANK", str(r))).write_text(json.dumps(
        {"history": res.history, "val_accuracy": res.metrics["val_accuracy"],
         "mix": res.metrics["mix"]["alpha"], "distributed": res.metrics.get("distributed")}))


@pytest.mark.integration
def test_two_processes_fine_tune_a_real_backbone_as_one(animals, tmp_path):
    """On real data: EfficientNet-Lite0 fine-tuned on 100 animal-mnist images by two
    processes (DDP, per-process batch 8) matches one process (batch 16): the same losses
    within 1e-3 (float sums in another order, through Adam's normalised steps; 3.6e-4 seen),
    the same validation accuracy and mix."""
    root, _ = animals
    out = str(tmp_path / "rankRANK.json")
    mp.spawn(_real_fine_tune, args=(free_port(), str(root / "train"), str(tmp_path / "c2"), out),
             nprocs=2, join=True)
    ctx = mp.get_context("spawn")  # alone, in a fresh process too: the patches stay there
    p = ctx.Process(target=_real_fine_tune, args=(None, "", str(root / "train"),
                                                   str(tmp_path / "c1"), out))
    p.start()
    p.join(timeout=400)
    assert p.exitcode == 0
    one, two, other = (json.loads((tmp_path / f"rank{r}.json").read_text())
                       for r in ("None", 0, 1))
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in run["history"]]
                for run in (two, other)]
    assert timeless[0] == timeless[1] and two["mix"] == other["mix"]  # both end with one run
    assert two["distributed"]["per_process_batch"] == 8 and one["distributed"] is None
    assert [h["phase"] for h in one["history"]] == ["head", "fine_tune", "fine_tune"]
    worst = max(abs(a[k] - b[k]) for a, b in zip(one["history"], two["history"], strict=True)
                for k in ("train_loss", "val_loss"))
    assert worst < 1e-3, (worst, one["history"], two["history"])
    assert two["val_accuracy"] == one["val_accuracy"] and two["mix"] == one["mix"]


# -- torchrun on the command line ------------------------------------------------------------------
def _kill_rank_1(proc: subprocess.Popen, history: Path, rows: int) -> bool:
    """SIGKILL the worker of rank 1 once the run's history has `rows` rows."""
    while proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) > rows:
            for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if b"RANK=1" in env:
                    os.kill(int(pid), signal.SIGKILL)
                    return True
        time.sleep(0.01)
    return False


def test_torchrun_job_killed_mid_way_stops_clearly_and_resumes_on_both_ranks(tmp_path):
    data = write_folder(tmp_path / "data", ("a", "b"), 8)
    out = tmp_path / "runs" / "ddp"
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    args = ["train", data, "--out", out, "--strategy", "fine_tune", "--epochs", "4",
            "--batch-size", "4", "--patience", "10", *TINY]
    proc = subprocess.Popen(torchrun(*args, port=free_port()), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_rank_1(proc, out.parent / ".ddp.partial" / "history.csv", rows=2)
    (_, err), = finish(proc, timeout=240)
    assert killed and proc.returncode != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "process 0 of the torchrun job" in lines[0], err[-2000:]
    assert "run the same command again to resume" in lines[0]
    assert not out.exists()

    again = run_job(torchrun(*args, port=free_port()), env=env, timeout=240)
    assert again.returncode == 0, (  # each process's own error line, then torchrun's summary
        [ln for ln in again.stderr.splitlines() if "error" in ln.lower()][:8],
        again.stderr[-1500:])
    assert "ONNX Runtime unavailable" not in again.stderr
    assert again.stdout.count("done in") == 1 and "resuming the interrupted run" in again.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = metrics["distributed"]["resumed_from"]
    assert resumed[0] == resumed[1] and resumed[0] is not None  # both ranks, one checkpoint
    assert [r["phase"] for r in history_rows(out)] == ["head"] + ["fine_tune"] * 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp"]  # no partial, no lock


@pytest.mark.integration
def test_torchrun_linear_probe_on_animal_mnist_matches_one_process(animals, tmp_path):
    """EfficientNet-Lite0 with its shipped weights on animal-mnist (100 images, 64 px): the
    two-process job extracts each image once on a fresh cache, one process measures and
    fits the same probe."""
    from headstart.cli.main import main
    root, _ = animals
    args = ["train", root / "train", "--strategy", "linear_probe", "--image-size", "64",
            "--quiet"]
    assert main([*map(str, args), "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    proc = run_job(torchrun(*args, "--out", tmp_path / "two", port=free_port()), env=env,
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ONNX Runtime unavailable" not in proc.stderr  # one export, loaded by both ranks
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert two["backbone"] == one["backbone"] and two["val_accuracy"] == one["val_accuracy"]
    for a, b in zip(history_rows(tmp_path / "one"), history_rows(tmp_path / "two"), strict=True):
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) < 1e-4
    extracted = two["distributed"]["extracted_per_process"]
    assert sum(extracted) == 100 and abs(extracted[0] - extracted[1]) <= 1  # each once
    settings = [yaml.safe_load((tmp_path / r / "config.yaml").read_text()) for r in ("one", "two")]
    assert "distributed" not in settings[0]  # config.yaml says how the job ran, and its rule
    job = settings[1]["distributed"]
    assert (job["world"], job["per_process_batch"], job["effective_batch"]) == (2, 16, 32)
    assert "learning rates are those of one process" in job["lr_rule"] and job["batchnorm"]


def test_torchrun_compare_matches_one_process_and_rank_0_writes(tmp_path):
    """`compare` under torchrun: the arms train and are scored by both processes together;
    one summary is printed and one report written, by rank 0; the frozen probe and the classic
    arm score as one process does, the gradient arms within a few test examples."""
    from headstart.cli.main import main
    data = write_folder(tmp_path / "data", ("a", "b", "c"), 16, size=32, seed=5)
    args = ["compare", data, "--epochs", "2", "--batch-size", "8", *TINY]
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    assert main([*map(str, args), "--out", str(tmp_path / "one")]) == 0
    proc = run_job(torchrun(*args, "--out", tmp_path / "two", port=free_port()), env=env,
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("verdict:") == 1, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "one", "two"]
    one, two = (json.loads((tmp_path / r / "report.json").read_text()) for r in ("one", "two"))
    assert "distributed" not in one and two["distributed"]["world"] == 2
    n = one["test"]["n"]
    for arm in ("probe", "classic"):
        assert two["arms"][arm]["accuracy"] == one["arms"][arm]["accuracy"], arm
    for arm in ("transfer", "scratch"):
        assert abs(two["arms"][arm]["accuracy"] - one["arms"][arm]["accuracy"]) <= 2 / n, arm


def test_torchrun_max_restarts_resumes_the_job_from_its_last_checkpoint(tmp_path):
    """With --max-restarts 1, a worker killed mid-way makes torchrun restart the job itself:
    both processes resume from rank 0's checkpoint and the run completes in one command."""
    data = write_folder(tmp_path / "data", ("a", "b"), 8)
    out = tmp_path / "runs" / "ddp"
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    args = ["train", data, "--out", out, "--strategy", "fine_tune", "--epochs", "6",
            "--batch-size", "4", "--patience", "10", *TINY]
    cmd = torchrun(*args, port=free_port())
    cmd[cmd.index("--nproc-per-node"):cmd.index("--nproc-per-node")] = ["--max-restarts", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed = _kill_rank_1(proc, out.parent / ".ddp.partial" / "history.csv", rows=2)
    (stdout, stderr), = finish(proc, timeout=300)
    assert killed and proc.returncode == 0, stderr[-2000:]
    assert "resuming the interrupted run" in stdout and stdout.count("done in") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = metrics["distributed"]["resumed_from"]
    assert resumed[0] == resumed[1] and resumed[0] is not None
    assert [r["phase"] for r in history_rows(out)] == ["head"] + ["fine_tune"] * 6
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp"]


def test_torchrun_two_nodes_by_rendezvous_train_as_one_job(tmp_path):
    """Two torchrun launchers (two 'machines', one process each) meet at a c10d rendezvous
    endpoint, as the README's multi-machine command does: one job of world 2 over 2 nodes,
    one run written, each image extracted once."""
    data = write_folder(tmp_path / "data", ("a", "b"), 10)
    out = tmp_path / "runs" / "nodes"
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    port = free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
              "--nproc-per-node", "1", "--rdzv-backend", "c10d",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "nodes-test", "-m",
              "headstart", "train", str(data), "--out", str(out), "--strategy", "fine_tune",
              "--epochs", "2", "--batch-size", "4", *TINY]
    procs = [subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = finish(*procs, timeout=300)
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in results]
    assert sum(o.count("done in") for o, _ in results) == 1
    d = json.loads((out / "metrics.json").read_text())["distributed"]
    assert d["world"] == 2 and d["nodes"] == 2
    assert sum(d["extracted_per_process"]) == 20 and min(d["extracted_per_process"]) > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["nodes"]


def test_a_run_records_its_job_and_resumes_with_another_world(tmp_path):
    """config.yaml says how a torchrun job ran; that record is no setting: a partial run
    holding it resumes from its checkpoint (torchrun may restart with another world size)."""
    from headstart.training.rundir import RunWriter
    first = RunWriter(tmp_path / "run")
    first.open({"strategy": "fine_tune", "batch_size": 32})
    ckpt = {"phase": 0, "epoch": 1, "model": {}, "history": []}
    first.save_checkpoint(ckpt)
    first.record_job({"distributed": {"world": 2, "effective_batch": 32}})
    first.close()
    stored = yaml.safe_load((first.partial / "config.yaml").read_text())
    assert stored == {"strategy": "fine_tune", "batch_size": 32,
                      "distributed": {"world": 2, "effective_batch": 32}}
    again = RunWriter(tmp_path / "run")
    assert again.open({"strategy": "fine_tune", "batch_size": 32}) == ckpt


def test_torchrun_pretrain_evaluate_and_rank_run_as_one_job(tmp_path):
    """`pretrain`, `evaluate` and `rank` under torchrun. A source trained from scratch updates
    its BatchNorm statistics on each process's own batches: the processes must still end with
    one model (the same ONNX graph name, so no fallback to PyTorch), and the source it writes
    evaluates and ranks under torchrun as in one process."""
    from headstart.cli.main import main
    data = write_folder(tmp_path / "data", ("a", "b", "c"), 12, size=32, seed=3)
    src = tmp_path / "src"
    env = {**os.environ, **ENV, "HEADSTART_CACHE": str(tmp_path / "cache")}
    proc = run_job(torchrun("pretrain", data, "--arch", "tiny_cnn", "--out", src,
                            "--input-size", "32", "--epochs", "2", "--batch-size", "4",
                            "--quiet", port=free_port()), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ONNX Runtime unavailable" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.count("source model saved") == 1
    assert (src / "source.json").is_file() and (src / "model.safetensors").is_file()

    for args in (["evaluate", src, data, "--json"],
                 ["rank", data, "--candidates", f"{src},random:tiny_cnn", "--image-size", "32",
                  "--json"]):
        job = run_job(torchrun(*args, port=free_port()), env=env, timeout=300)
        assert job.returncode == 0, job.stderr[-2000:]
        two = json.loads(job.stdout)  # rank 0 alone prints: one JSON object
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            assert main([*map(str, args)]) == 0
        one = json.loads(buf.getvalue())
        if args[0] == "evaluate":
            assert two["accuracy"] == one["accuracy"] and two["n"] == one["n"] == 36
        else:
            assert [r["candidate"]["name"] for r in two["results"]] == \
                [r["candidate"]["name"] for r in one["results"]]
            for a, b in zip(two["results"], one["results"]):
                assert a["scores"]["logme"]["value"] == pytest.approx(
                    b["scores"]["logme"]["value"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "src"]
