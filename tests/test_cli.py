"""The command line as a user meets it: the zoo listing, exit codes of the real entry point."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def models_json():
    """`headstart models --json`, run once (it builds every backbone of the zoo)."""
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
