"""One test (or a few) per reliability mechanism: the run lock, --overwrite, safe names, the
guarded readers, the damaged feature cache, atomic ONNX files, the folder rules, and verified
downloads (on a local HTTP server and a stand-in Hugging Face hub on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, leftovers, write_folder
from headstart import api
from headstart.backbones import cache_dir, create_backbone
from headstart.backbones import download as D
from headstart.modalities import load_dataset
from headstart.exceptions import DamagedFileError, RunDirError, RunLockedError, WeightsError
from headstart.safeio import read_json, read_safetensors, read_torch, read_yaml, safe_name
from headstart.training import TrainConfig
from headstart.training.features import FeatureCache, FeatureExtractor, export_onnx
from headstart.training.rundir import RunWriter, read_run

LP = ["--strategy", "linear_probe", "--epochs", "1", *TINY]
QUIET = dict(progress=False, log=lambda *_: None)


# -- one writer per run ------------------------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys, time
    from headstart.training.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """holder(out) -> a live process that holds the lock of run `out`."""
    procs = []

    def start(out: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_second_writer_is_refused_with_the_first_ones_pid(holder, tmp_path, cli, make_folder):
    out = tmp_path / "runs" / "cats"
    p = holder(out)
    with pytest.raises(RunLockedError, match=rf"run {out} is being written by process {p.pid}"):
        RunWriter(out)
    line = cli("train", make_folder(), "--out", out, *LP).one_line_error()
    assert f"is being written by process {p.pid}" in line
    line = cli("predict", "--run", out, tmp_path / "x.png").one_line_error()
    assert f"being written by process {p.pid}" in line
    assert leftovers(tmp_path / "runs") == [".cats.lock"]  # the live writer's, untouched


def test_a_killed_writers_lock_is_taken_over(holder, tmp_path, cli, make_folder):
    out = tmp_path / "runs" / "cats"
    p = holder(out)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "runs" / ".cats.lock").is_file()  # left behind by kill -9
    r = cli("train", make_folder(), "--out", out, *LP)
    assert r.rc == 0, r
    assert f"process {p.pid} that held it is no longer running" in r.out
    assert leftovers(tmp_path / "runs") == ["cats"]


def test_the_lock_is_given_back_when_training_fails(tmp_path, make_folder):
    out = tmp_path / "runs" / "x"
    with pytest.raises(Exception):
        api.train(tmp_path / "no-data", out, config=TrainConfig(backbone="tiny_cnn"), **QUIET)
    assert not (tmp_path / "runs").exists()  # no lock, and no folder made for it
    api.train(make_folder(), out, config=TrainConfig(backbone="tiny_cnn", input_size=32,
                                                     strategy="linear_probe"), **QUIET)
    assert leftovers(tmp_path / "runs") == ["x"]


# -- --overwrite -------------------------------------------------------------------------------
def test_overwrite_never_replaces_the_data_or_a_foreign_folder(tmp_path, make_folder):
    data = make_folder()
    files = sorted(data.rglob("*"))
    cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy="linear_probe")
    with pytest.raises(RunDirError, match="data itself"):
        api.train(data, data, config=cfg, overwrite=True, **QUIET)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a headstart run.*notes.txt"):
        api.train(data, mine, config=cfg, overwrite=True, **QUIET)
    assert sorted(data.rglob("*")) == files and (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine"]


def test_overwrite_replaces_a_previous_run_and_leaves_nothing_behind(tmp_path, make_folder):
    cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy="linear_probe")
    out = tmp_path / "runs" / "r"
    api.train(make_folder(), out, config=cfg, **QUIET)
    api.train(make_folder("other", classes=("x", "y", "z")), out, config=cfg, overwrite=True,
              **QUIET)
    assert json.loads((out / "labels.json").read_text()) == ["x", "y", "z"]
    assert leftovers(tmp_path / "runs") == ["r"]


# -- safe names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "", "/etc/passwd", "../../x", "a/b", "a\\b",
                                  ".hidden", "CON", "nul.txt", "x\x00y", "tab\tname", " . ",
                                  "é" * 300, "ok name"])
def test_safe_name_stays_one_component_inside_its_folder(name, tmp_path):
    safe = safe_name(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".") and len(safe.encode()) <= 100
    assert (tmp_path / safe).parent == tmp_path
    (tmp_path / safe).mkdir()  # the system accepts it


def test_safe_names_keep_ordinary_names_and_keep_names_apart():
    assert safe_name("cat") == "cat" and safe_name("Golden retriever 2") == "Golden retriever 2"
    tricky = ["a/b", "a_b", "a\\b", "a:b", "..a", "a", "." * 3, "_"]
    assert len({safe_name(n) for n in tricky}) == len(tricky)


# -- guarded readers ---------------------------------------------------------------------------
@pytest.mark.parametrize("reader,content", [
    (read_json, b"{not json"), (read_json, b"\xff\xfe"), (read_yaml, b"!!python/object:os.x {}"),
    (read_yaml, b"a: [unclosed"), (read_safetensors, b"\x10\x00\x00\x00\x00\x00\x00\x00{}"),
    (read_safetensors, b""), (read_torch, b"PK\x03\x04garbage"), (read_torch, b"\x80\x04N.")])
def test_guarded_readers_turn_damage_into_one_error_naming_the_file(reader, content, tmp_path):
    path = tmp_path / "damaged.file"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError) as e:
        reader(path, what="the thing", fix="do this")
    assert str(path) in str(e.value) and "do this" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_pickle_is_never_executed(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'HACKED'}",))
    (tmp_path / "ckpt.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DamagedFileError):
        read_torch(tmp_path / "ckpt.pt", what="a checkpoint", fix="fix")
    assert not (tmp_path / "HACKED").exists()


def test_read_run_names_the_damaged_file(tiny_runs, tmp_path):
    import shutil
    run = shutil.copytree(tiny_runs["linear_probe"], tmp_path / "run")
    (run / "metrics.json").write_text('["a list, not the metrics"]')
    with pytest.raises(RunDirError, match=r"metrics.json.*expected a dict"):
        read_run(run)


# -- the feature cache ---------------------------------------------------------------------
def test_a_damaged_feature_cache_is_reported_and_rebuilt(tmp_path, caplog, make_folder):
    db = tmp_path / "features.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    cache = FeatureCache(db)
    assert "damaged" in caplog.text and (tmp_path / "features.sqlite.damaged").is_file()
    cache.put_many("k", [("h", 0, np.ones(3))])
    assert cache.get_many("k", ["h"], 0)["h"].tolist() == [1, 1, 1]
    cache.close()
    # damaged later, while in use: rebuilt, and training goes on
    cache = FeatureCache(db)
    db.write_bytes(b"not a database at all" * 100)
    assert cache.get_many("k", ["h"], 0) == {}
    cfg = TrainConfig(backbone="tiny_cnn", input_size=32, strategy="linear_probe")
    os.environ["HEADSTART_CACHE"], old = str(tmp_path), os.environ["HEADSTART_CACHE"]
    try:
        (tmp_path / "features.sqlite").write_bytes(b"garbage" * 99)
        api.train(make_folder(), config=cfg, **QUIET)
    finally:
        os.environ["HEADSTART_CACHE"] = old


def test_a_busy_feature_cache_is_bypassed_not_moved_aside(tmp_path, caplog, monkeypatch):
    db = tmp_path / "f.sqlite"
    FeatureCache(db).close()
    other = sqlite3.connect(str(db))
    other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than we wait
    monkeypatch.setattr(FeatureCache, "TIMEOUT", 0.05)
    cache = FeatureCache(db)
    cache.put_many("k", [("h", 0, np.ones(2))])
    assert "cannot be used" in caplog.text and "damaged" not in caplog.text
    assert not (tmp_path / "f.sqlite.damaged").exists()
    assert cache.get_many("k", ["h"], 0)["h"].tolist() == [1, 1]  # in memory, this run
    other.rollback()
    other.close()


def test_damaged_rows_are_computed_again(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite")
    cache.put_many("k", [("a", 0, np.ones(4)), ("b", 0, np.ones(4))])
    cache.db.execute("UPDATE features SET vec=? WHERE hash='b'", (b"\x00\x01\x02",))
    cache.db.commit()
    assert sorted(cache.get_many("k", ["a", "b"], 0)) == ["a"]


# -- ONNX files: unique temporary names, atomic rename -----------------------------------------
def test_overlapping_onnx_exports_of_one_file_both_succeed(tmp_path, monkeypatch):
    """Two exporters of the same ONNX file overlapping (torchrun ranks on a fresh cache): the
    second runs entirely while the first is writing. Each writes its own temporary file and
    renames it; both succeed, one whole file remains, no temporary is left."""
    import torch.onnx
    path, names = tmp_path / "onnx" / "tiny.onnx", []

    def fake_export(model, args, f, **kw):
        names.append(Path(f).name)
        Path(f).write_bytes(b"first" if len(names) == 1 else b"second")
        if len(names) == 1:  # the other process exports meanwhile
            export_onnx(backbone, path)
    monkeypatch.setattr(torch.onnx, "export", fake_export)
    backbone = create_backbone("tiny_cnn", image_size=32)
    export_onnx(backbone, path)
    assert len(set(names)) == 2  # two temporary names
    assert path.read_bytes() == b"first" and [p.name for p in path.parent.iterdir()] == [path.name]


def test_an_onnx_export_that_fails_leaves_nothing(tmp_path, monkeypatch):
    import torch.onnx

    def failing(model, args, f, **kw):
        Path(f).write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(RuntimeError):
        export_onnx(create_backbone("tiny_cnn", image_size=32), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cached_onnx_file_is_exported_again():
    backbone = create_backbone("tiny_cnn", image_size=32)
    ex = FeatureExtractor(backbone)
    name = f"tiny_cnn-{ex.fingerprint}-32.onnx"
    (cache_dir() / "onnx").mkdir(parents=True, exist_ok=True)
    (cache_dir() / "onnx" / name).write_bytes(b"not onnx")
    assert ex.engine == "onnxruntime"
    batch = np.zeros((2, 3, 32, 32), np.float32)
    assert ex(batch).shape == (2, 32)


# -- folders: what is read, what is reported -----------------------------------------------
def test_everything_in_a_folder_is_read_or_reported(tmp_path):
    data = write_folder(tmp_path / "d", ("a", "b"), 3)
    write_folder(data, (".hidden",), 2)
    (data / "loose.png").write_bytes((data / "a" / "0.png").read_bytes())
    (data / "a" / ".DS_Store").write_bytes(b"x")
    extra = write_folder(tmp_path / "extra", ("z",), 2)
    os.symlink(extra / "z", data / "b" / "linked")
    ds = load_dataset(data)
    assert ds.counts() == {"a": 3, "b": 5}  # the linked folder is read, as class b
    assert ds.ignored_system_files == 1
    assert [x.split(" (")[0] for x in ds.ignored] == [f"{data}/.hidden/", str(data / "loose.png")]
    total = sum(1 for p in data.rglob("*") if p.is_file()) + 2  # rglob does not follow links
    assert len(ds) + ds.ignored_system_files + 2 + 1 == total  # .hidden's 2, loose 1


# -- downloads -----------------------------------------------------------------------------
class Files(http.server.BaseHTTPRequestHandler):
    """Serves `routes`: path -> (body, headers, mode); mode 'short' sends half the body under
    the full Content-Length, 'chunked' sends no Content-Length."""
    routes: dict = {}
    hits: Counter = Counter()

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        route = self.routes.get(self.path.split("?")[0])
        self.hits[(self.command, self.path)] += 1
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, headers, mode = route
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        if mode != "chunked":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data[:len(data) // 2] if mode == "short" else data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Files.routes, Files.hits = {}, Counter()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Files
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def weights_bytes(tmp_path):
    state = {k: v + 1.0 if v.is_floating_point() else v
             for k, v in create_backbone("tiny_cnn").state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    return path.read_bytes()


def no_temporary_files() -> bool:
    return not [p for p in cache_dir().rglob("*") if p.name.endswith((".tmp", ".incomplete"))]


def test_http_download_is_verified_cached_and_checked_again(server, weights_bytes):
    base, files = server
    files.routes["/m/model.safetensors"] = (weights_bytes, {}, "")
    url = base + "/m/model.safetensors"
    local = D.download(url)
    assert local.read_bytes() == weights_bytes and no_temporary_files()
    assert D.download(url) == local and files.hits[("GET", "/m/model.safetensors")] == 1
    local.write_bytes(weights_bytes[:-10] + b"x" * 10)  # damaged in the cache
    assert D.download(url).read_bytes() == weights_bytes
    assert files.hits[("GET", "/m/model.safetensors")] == 2
    create_backbone("tiny_cnn", weights=url)  # and it loads


def test_http_download_checksums(server, weights_bytes):
    base, files = server
    good = hashlib.sha256(weights_bytes).hexdigest()
    files.routes["/w.safetensors"] = (weights_bytes, {}, "")
    with pytest.raises(WeightsError, match="sha256 is .* not the"):
        D.download(base + "/w.safetensors#sha256=" + "0" * 64)
    assert no_temporary_files() and not list((cache_dir() / "weights").rglob("w.safetensors"))
    assert D.download(base + "/w.safetensors#sha256=" + good).read_bytes() == weights_bytes
    import base64
    digest = base64.b64encode(bytes(32)).decode()
    files.routes["/d.safetensors"] = (weights_bytes, {"Digest": f"sha-256={digest}"}, "")
    with pytest.raises(WeightsError, match="sha256"):
        D.download(base + "/d.safetensors")
    with pytest.raises(WeightsError, match="#"):
        D.download(base + "/w.safetensors#md5=abc")


def test_http_download_size_cap_and_cut_connection(server, weights_bytes, monkeypatch):
    base, files = server
    files.routes["/big"] = (weights_bytes, {}, "")
    files.routes["/stream"] = (weights_bytes, {}, "chunked")
    files.routes["/short"] = (weights_bytes, {}, "short")
    monkeypatch.setenv("HEADSTART_MAX_DOWNLOAD_MB", str(len(weights_bytes) / 2 / 2**20))
    with pytest.raises(WeightsError, match="over the download limit"):
        D.download(base + "/big")
    assert files.hits[("GET", "/big")] == 1
    with pytest.raises(WeightsError, match="ran past the limit"):
        D.download(base + "/stream")
    monkeypatch.delenv("HEADSTART_MAX_DOWNLOAD_MB")
    with pytest.raises(WeightsError, match="cut short|download failed"):
        D.download(base + "/short")
    assert no_temporary_files()
    assert not [p for p in (cache_dir() / "weights").rglob("*") if p.is_file()
                and p.name in ("big", "stream", "short")]


def _hub_route(files, repo: str, data: bytes, etag: str) -> None:
    files.routes[f"/{repo}/resolve/main/model.safetensors"] = (
        data, {"ETag": f'"{etag}"', "X-Repo-Commit": "a" * 40}, "")


def test_hf_download_through_huggingface_hub_is_checked_against_the_etag(
        server, weights_bytes, monkeypatch):
    base, files = server
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    _hub_route(files, "me/good", weights_bytes, hashlib.sha256(weights_bytes).hexdigest())
    path = D.download("hf://me/good")
    assert path.read_bytes() == weights_bytes and cache_dir() / "hub" in path.parents
    _hub_route(files, "me/bad", weights_bytes, "b" * 64)
    with pytest.raises(WeightsError, match="does not match the hub's checksum"):
        D.download("hf://me/bad")
    assert not [p for p in (cache_dir() / "hub").rglob("*") if "bad" in str(p) and p.is_file()
                and p.stat().st_size == len(weights_bytes)]
    _hub_route(files, "me/big", weights_bytes, hashlib.sha256(weights_bytes).hexdigest())
    monkeypatch.setenv("HEADSTART_MAX_DOWNLOAD_MB", "0.0001")
    with pytest.raises(WeightsError, match="over the download limit"):
        D.download("hf://me/big")
    assert files.hits[("GET", "/me/big/resolve/main/model.safetensors")] == 0
    with pytest.raises(WeightsError, match="expected hf://owner/repo"):
        D.download("hf://only-owner")


def test_a_failed_hub_download_leaves_no_temporary_file(server, monkeypatch):
    base, files = server
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    files.routes["/me/cut/resolve/main/model.safetensors"] = (
        b"x" * 5000, {"ETag": '"' + "c" * 64 + '"', "X-Repo-Commit": "a" * 40}, "short")
    with pytest.raises(WeightsError):
        D.download("hf://me/cut")
    assert no_temporary_files()


# -- pre-processing never blows an odd image up ----------------------------------------------
def test_a_strip_image_is_cropped_before_it_is_resized(monkeypatch):
    """1 x 200,000 pixels, resized shorter side first, would be 224 x 44.8 million pixels."""
    from PIL import Image

    from headstart.data.transforms import Augment, Preprocess
    asked = []
    real = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize",
                        lambda self, size, *a, **k: asked.append(size) or real(self, size, *a, **k))
    pre = Preprocess(224, (0.5,) * 3, (0.5,) * 3)
    import random
    for img in (Image.new("RGB", (1, 200_000)), Image.new("RGB", (150_000, 2))):
        assert pre(img).shape == (3, 224, 224)
        assert Augment(pre)(img, random.Random(0)).shape == (3, 224, 224)
    assert asked and max(max(s) for s in asked) <= 224 * 8


# -- labels that look like paths, all the way through a source model ---------------------------
def test_path_like_labels_stay_in_the_source_sample_and_map_back(tmp_path):
    """pretrain on labels such as '../../x' and '/etc/y': the sample's class folders are safe
    names inside the run, and retention (measured on that sample) maps them back to the
    labels: the accuracy before fine-tuning is the source's own held-out accuracy."""
    from conftest import pattern_image
    from headstart.pretrain import pretrain
    rng = np.random.default_rng(3)
    names = ["../../x", str(tmp_path / "abs"), "a/b", ".hidden"]
    images = [pattern_image(c, rng, 32) for c in range(4) for _ in range(10)]
    labels = [names[c] for c in range(4) for _ in range(10)]
    src = tmp_path / "runs" / "src"
    pretrain(images, src, arch="tiny_cnn", labels=labels, sample_size=100, **QUIET,
             config=TrainConfig(epochs=4, input_size=32, patience=10, flip=False))
    sample = src / "source_sample"
    assert all(sample in p.parents for p in sample.rglob("*"))
    assert not (tmp_path / "abs").exists() and not (tmp_path.parent / "x").exists()
    meta = json.loads((src / "source.json").read_text())
    assert sorted(meta["source_sample_folders"].values()) == sorted(names)
    target = write_folder(tmp_path / "t", ("p", "q"), 6)
    result = api.train(target, config=TrainConfig(backbone=str(src), strategy="fine_tune",
                                                 epochs=1, flip=False), **QUIET)
    retention = result.metrics["forgetting"]["retention"]
    assert retention["source_examples"] == meta["source_sample"] == 8
    assert meta["held_out_accuracy"] > 0
    assert retention["source_accuracy_before"] == pytest.approx(meta["held_out_accuracy"])


def test_a_prefetch_closed_part_way_never_waits_for_its_workers():
    """A prefetch_map left part-way (an error in the consumer) is closed by the garbage
    collector in whichever thread it runs, even inside threading's own bookkeeping while a
    thread starts, where joining a thread deadlocks: the suite once hung so. Closing must cancel
    what has not started and return without waiting for the work in flight."""
    from headstart.modalities import prefetch_map
    release, started = threading.Event(), []

    def slow(i):
        started.append(i)
        if i:
            release.wait(60)
        return i

    gen = prefetch_map(slow, range(100), workers=2, ahead=4)
    assert next(gen) == 0
    closer = threading.Thread(target=gen.close)
    closer.start()
    closer.join(10)
    try:
        assert not closer.is_alive(), "closing the prefetch waited for its workers"
    finally:
        release.set()
        closer.join()
    assert len(started) < 100  # what had not started was cancelled
