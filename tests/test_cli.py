"""The command line as a user meets it: the zoo listing, exit codes of the real entry point."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from headstart.backbones import list_backbones
from headstart.cli.main import build_parser

HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "matplotlib", "sklearn", "scipy",
         "fastapi", "uvicorn", "safetensors")
COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)
SHIPPED = [c.name for c in list_backbones()]  # at collection: before tests register their own


@pytest.fixture(scope="module")
def models_json():
    """`headstart models --json`, run once (it reads the sizes the registry records)."""
    from headstart.cli.main import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_models_json(models_json):
    by_name = {m["name"]: m for m in models_json}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
            "tiny_cnn"} <= set(by_name)
    lite0 = by_name["efficientnet_lite0"]
    assert lite0["installed"] is True and lite0["input_size"] == 224
    assert lite0["feature_dim"] == 1280 and lite0["license"] == "Apache-2.0"
    assert lite0["layer_groups"][0] == "stem" and lite0["layer_groups"][-1] == "top"
    assert 4.0 < lite0["params_m"] < 5.5 and 0.3 < lite0["gflops"] < 1.0
    assert by_name["efficientnet_lite2"]["gflops"] > by_name["efficientnet_lite1"]["gflops"] \
        > lite0["gflops"]
    assert by_name["tiny_cnn"]["layer_groups"] == ["stem", "block1", "block2"]


def test_models_table(cli):
    r = cli("models")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0].split()[:2] == ["name", "input"]
    row = next(line for line in lines if line.startswith("efficientnet_lite0"))
    assert "224px" in row and "installed" in row and "Apache-2.0" in row
    assert "layer groups (early -> late):" in r.out


def test_entry_point_exit_status(tmp_path):
    """The real process: one stderr line and status 2 on a user error."""
    p = subprocess.run([sys.executable, "-m", "headstart.cli.main", "train", str(tmp_path / "x"),
                        "--out", str(tmp_path / "run"), "--backbone", "tiny_cnn"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: ")
    assert str(tmp_path / "x") in p.stderr


def test_usage_errors_exit_2(cli, capsys):
    with pytest.raises(SystemExit) as e:
        cli("train", "data")  # --out is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli("train", "data", "--out", "x", "--strategy", "magic")
    assert e.value.code == 2


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command):
    """`headstart --help` and every command's: the real process, what it imported (-X
    importtime lists every module) holds none of torch and the other heavy libraries."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "headstart",
                        *([command] if command else []), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("usage: headstart"), p.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported  # the listing is there: the check below can fail
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("name", SHIPPED)
def test_recorded_sizes_equal_a_fresh_count(name):
    """The figures `headstart models` reads from the registry are the ones a fresh count of the
    network gives: change a backbone and this says what to record instead."""
    from headstart.backbones import Size, get_config
    from headstart.backbones.sizes import measure
    c = get_config(name)
    fresh = measure(name)
    assert Size(c.param_count, c.flops) == fresh, \
        f"record param_count={fresh.parameters}, flops={fresh.flops} on {name}'s BackboneConfig"


@pytest.mark.parametrize("name", SHIPPED)
def test_recorded_cut_sizes_equal_a_fresh_count(name, monkeypatch):
    """Every default cut of a shipped backbone has its size recorded (a first run's cut
    measurement then builds and counts nothing), and the record is what a fresh count gives."""
    from headstart.backbones import Size, default_cuts, get_config
    from headstart.backbones import sizes
    c = get_config(name)
    assert sorted(g for g, _, _ in c.cut_sizes) == sorted(default_cuts(name)), \
        f"record cut_sizes for {name}'s default cuts {default_cuts(name)}"
    for group, parameters, flops in c.cut_sizes:
        cut = f"{name}@{group}"
        fresh = sizes.measure(cut)
        assert Size(parameters, flops) == fresh, \
            f"record ({group!r}, {fresh.parameters}, {fresh.flops}) in {name}'s cut_sizes"
        monkeypatch.setattr(sizes, "measure", lambda n: pytest.fail(f"{n} was counted"))
        assert sizes.size_of(get_config(cut)) == fresh
        monkeypatch.undo()


def test_an_unrecorded_backbone_is_built_once_and_its_size_cached(monkeypatch, cli):
    from dataclasses import replace

    from headstart.backbones import get_config, registry, sizes
    from headstart.cache import cache_dir
    monkeypatch.setitem(registry._REGISTRY, "my_cnn", replace(
        get_config("tiny_cnn"), name="my_cnn", param_count=None, flops=None))
    built = []
    create = sizes.create_backbone
    monkeypatch.setattr(sizes, "create_backbone",
                        lambda *a, **k: built.append(a) or create(*a, **k))
    (cache_dir() / sizes.CACHE_FILE).unlink(missing_ok=True)
    for _ in range(2):
        r = cli("models", "--json")
        assert r.rc == 0, r
    assert built == [("my_cnn",)]  # the shipped ones are recorded; the new one built once
    row = next(m for m in r.json() if m["name"] == "my_cnn")
    tiny = get_config("tiny_cnn")
    assert (row["params_m"], row["gflops"]) == (round(tiny.param_count / 1e6, 2),
                                                round(tiny.flops / 1e9, 2))
    (cache_dir() / sizes.CACHE_FILE).write_text("{not json")  # damaged: counted again
    assert cli("models").rc == 0 and len(built) == 2
    assert json.loads((cache_dir() / sizes.CACHE_FILE).read_text())  # and rewritten


def test_names_imported_on_first_read_are_the_ones_they_were():
    """The packages' lazy names (_lazy.py) are the library's objects, whichever is imported
    first: serve's `app` stays the function even when its submodule app.py loads first."""
    code = ("import types, headstart.serve.app, headstart.training.rundir\n"
            "import headstart, headstart.serve, headstart.training, headstart.export\n"
            "from headstart.training.config import TrainConfig\n"
            "assert not isinstance(headstart.serve.app, types.ModuleType)\n"
            "assert headstart.TrainConfig is TrainConfig is headstart.training.TrainConfig\n"
            "assert callable(headstart.export.export_run) and headstart.list_backbones()\n"
            "assert {'TrainConfig', 'create_backbone'} <= set(dir(headstart))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import headstart
        headstart.nothing  # noqa: B018
