"""Shared fixtures: an isolated cache, tiny synthetic image folders, a CLI runner, and tiny_cnn
runs trained once per session.

Unit tests use the registered `tiny_cnn` backbone (32 px, fixed random init) on small images
written with Pillow; tests marked `integration` use the real EfficientNet-Lite0 and the real
animal-mnist data that ship in packages.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

# Before headstart is imported anywhere: never touch ~/.cache (features, ONNX files, downloads).
_CACHE = tempfile.mkdtemp(prefix="headstart-test-cache-")
os.environ["HEADSTART_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from headstart import threads  # noqa: E402

# The process's thread policy once, first: a module that then sets torch's threads for itself
# (test_compare.py's one_thread) is not overridden by the first run it trains.
threads.apply()

TINY = ["--backbone", "tiny_cnn", "--image-size", "32", "--quiet"]
_seeds = itertools.count(1000)


def pattern_image(cls: int, rng: np.random.Generator, size: int = 36) -> np.ndarray:
    """A learnable picture: dark noise with a bright top half (class 0), left half (class 1),
    bottom half (class 2) or right half (class 3)."""
    a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    h = size // 2
    region = [np.s_[:h, :], np.s_[:, :h], np.s_[h:, :], np.s_[:, h:]][cls % 4]
    a[region] += 150
    return a


def write_folder(root: Path, classes=("a", "b"), n: int = 6, *, size: int = 36,
                 seed: int | None = None, ext: str = ".png") -> Path:
    """root/<class>/<i>.png with learnable content. Each call without a seed draws new pixels,
    so the feature cache never hides a test's images behind an earlier test's."""
    rng = np.random.default_rng(next(_seeds) if seed is None else seed)
    for ci, c in enumerate(classes):
        d = Path(root) / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(pattern_image(ci, rng, size)).save(d / f"{i}{ext}")
    return Path(root)


@pytest.fixture
def make_folder(tmp_path):
    """make_folder(name="data", classes=("a","b"), n=6) -> a fresh labelled image folder."""
    def make(name: str = "data", classes=("a", "b"), n: int = 6, **kw) -> Path:
        return write_folder(tmp_path / name, classes, n, **kw)
    return make


class CLIResult:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def one_line_error(self) -> str:
        """Assert the CLI failed the documented way (exit 2, one `error:` line on stderr) and
        return that line."""
        assert self.rc == 2, (self.rc, self.out, self.err)
        assert len(self.err_lines) == 1, self.err
        line = self.err_lines[0]
        assert line.startswith("error: "), line
        return line

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CLIResult(rc={self.rc}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def cli(capsys):
    """cli("train", DATA, "--out", RUN, ...) -> CLIResult(rc, out, err) of headstart's main()."""
    from headstart.cli.main import main

    def run(*args) -> CLIResult:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CLIResult(rc, out, err)
    return run


def leftovers(parent: Path) -> list[str]:
    """Everything in a runs folder, hidden partial directories included."""
    return sorted(p.name for p in Path(parent).iterdir()) if Path(parent).exists() else []


def history_rows(run: Path) -> list[dict]:
    import csv
    with open(Path(run) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- heavy objects, built once per session ----------------------------------------------------

@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """8 learnable images per class, 2 classes, shared by the session's tiny runs."""
    return write_folder(tmp_path_factory.mktemp("tiny") / "data", ("a", "b"), 8, seed=7)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_data) -> dict[str, Path]:
    """One finished tiny_cnn run per strategy, trained through the CLI's own code path."""
    from headstart.cli.main import main

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for strategy, epochs in (("linear_probe", 1), ("fine_tune", 2), ("gradual", 4),
                             ("scratch", 2)):
        out = root / strategy
        rc = main(["train", str(tiny_data), "--out", str(out), "--strategy", strategy,
                   "--epochs", str(epochs), "--patience", "10", *TINY])
        assert rc == 0, f"training {strategy} failed"
        runs[strategy] = out
    return runs


@pytest.fixture(scope="session")
def articles():
    """(texts, labels): the first 6 real BBC articles of each topic in the training pool."""
    from headstart.data.shipped import bbc_split, load_bbc_news
    texts, labels, _ = load_bbc_news()
    pool, _ = bbc_split(texts, labels)
    pick = [i for c in sorted(set(labels)) for i in [j for j in pool if labels[j] == c][:6]]
    return [texts[i] for i in pick], [labels[i] for i in pick]


def write_csv(path: Path, texts, labels, *, header="text,label", sep=",") -> Path:
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header.split(","))
        w.writerows(zip(texts, labels))
    return path


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory, articles) -> Path:
    """A tiny_text linear-probe run on 6 real BBC articles per topic (a text run to predict
    with, evaluate and damage; copy it before changing it)."""
    from headstart.cli.main import main

    root = tmp_path_factory.mktemp("textrun")
    data = write_csv(root / "news.csv", *articles)
    out = root / "run"
    rc = main(["train", str(data), "--out", str(out), "--backbone", "tiny_text",
               "--strategy", "linear_probe", "--quiet"])
    assert rc == 0, "training the tiny text run failed"
    return out


@pytest.fixture(scope="module")
def text_run_src(request):
    """A getter of tiny_text_run, so that only the cases that need a text run train one."""
    return lambda: request.getfixturevalue("tiny_text_run")


# -- real shipped images ----------------------------------------------------------------------
ANIMAL_PER_CLASS = 10
ANIMAL_TEST_PER_CLASS = 30


@pytest.fixture(scope="session")
def china_jpg(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_sample_image
    path = tmp_path_factory.mktemp("photos") / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(path, quality=95)
    return path


@pytest.fixture(scope="session")
def animals(tmp_path_factory):
    """animal-mnist written by `headstart make-dataset`, plus a 30-per-class slice of its
    held-out test folder (the whole hold-out is 2,000 images)."""
    pytest.importorskip("animal_mnist", reason="pip install --no-deps animal-mnist==0.4")
    from headstart.cli.main import main
    root = tmp_path_factory.mktemp("animal") / "animal-mnist"
    assert main(["make-dataset", "animal-mnist", str(root), "--per-class",
                 str(ANIMAL_PER_CLASS)]) == 0
    test = root.parent / "test-slice"
    for d in sorted((root / "test").iterdir()):
        (test / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:ANIMAL_TEST_PER_CLASS]:
            shutil.copy(f, test / d.name / f.name)
    return root, test
