"""Every bad input: one `error:` line naming the file and the fix, exit status 2, nothing left
in the runs folder; with --skip-bad, a printed list of what was skipped (never silent)."""
from __future__ import annotations

import itertools
import json
import os

import pytest
from PIL import Image

from conftest import TINY, leftovers

LP = ["--strategy", "linear_probe", "--epochs", "1", *TINY]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def train(cli, data, runs, *extra, name="run"):
    return cli("train", data, "--out", runs / name, *LP, *extra)


def assert_skipped_listed(result, *names):
    """--skip-bad ran to the end and printed the list of skipped inputs, each by name."""
    assert result.rc == 0, result
    lines = result.out.splitlines()
    heads = [i for i, line in enumerate(lines) if "bad input(s)" in line and "skipped" in line]
    assert heads, result.out
    listed = [line for i in heads for line in itertools.takewhile(
        lambda x: x.startswith("  "), lines[i + 1:])]
    for name in names:
        assert any(name in line for line in listed), (name, result.out)


# -- corrupt, truncated, non-image ------------------------------------------------------------

def test_truncated_png_names_file_and_fix(cli, make_folder, tmp_path):
    data = make_folder()
    truncate(data / "a" / "0.png")
    runs = tmp_path / "runs"
    line = train(cli, data, runs).one_line_error()
    assert str(data / "a" / "0.png") in line
    assert "--skip-bad" in line and "truncated" in line
    assert leftovers(runs) == []


def test_truncated_png_with_skip_bad_is_listed(cli, make_folder, tmp_path):
    data = make_folder()
    truncate(data / "a" / "0.png")
    runs = tmp_path / "runs"
    r = train(cli, data, runs, "--skip-bad")
    assert_skipped_listed(r, str(data / "a" / "0.png"))
    assert leftovers(runs) == ["run"]
    metrics = json.loads((runs / "run" / "metrics.json").read_text())
    assert any(str(data / "a" / "0.png") in s for s in metrics["skipped"])
    assert metrics["train_examples"] + metrics["val_examples"] == 11


def test_garbage_bytes_with_image_extension(cli, make_folder, tmp_path):
    data = make_folder()
    (data / "b" / "fake.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    line = train(cli, data, tmp_path / "runs").one_line_error()
    assert str(data / "b" / "fake.jpg") in line and "--skip-bad" in line
    assert leftovers(tmp_path / "runs") == []


def test_empty_file(cli, make_folder, tmp_path):
    data = make_folder()
    (data / "b" / "empty.png").write_bytes(b"")
    line = train(cli, data, tmp_path / "runs").one_line_error()
    assert str(data / "b" / "empty.png") in line and "empty" in line


def test_non_image_file_in_class_folder(cli, make_folder, tmp_path):
    data = make_folder()
    (data / "a" / "notes.txt").write_text("collected on monday")
    runs = tmp_path / "runs"
    line = train(cli, data, runs).one_line_error()
    assert str(data / "a" / "notes.txt") in line
    assert "not an image" in line and "--skip-bad" in line
    assert leftovers(runs) == []


def test_non_image_file_with_skip_bad_is_listed(cli, make_folder, tmp_path):
    data = make_folder()
    (data / "a" / "notes.txt").write_text("collected on monday")
    r = train(cli, data, tmp_path / "runs", "--skip-bad")
    assert_skipped_listed(r, "notes.txt")


def test_system_files_are_ignored_and_counted(cli, make_folder, tmp_path):
    data = make_folder()
    (data / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "b" / "Thumbs.db").write_bytes(b"\0" * 10)
    r = train(cli, data, tmp_path / "runs")
    assert r.rc == 0, r
    assert "ignored 2 hidden or system file(s)" in r.out


# -- folder structure -------------------------------------------------------------------------

@pytest.mark.parametrize("skip_bad", [False, True])
def test_empty_class_folder(cli, make_folder, tmp_path, skip_bad):
    data = make_folder()
    (data / "c").mkdir()
    runs = tmp_path / "runs"
    line = train(cli, data, runs, *(["--skip-bad"] if skip_bad else [])).one_line_error()
    assert str(data) in line and "c hold no images" in line
    assert "remove the folder" in line
    assert leftovers(runs) == []


def test_single_class(cli, make_folder, tmp_path):
    data = make_folder(classes=("only",))
    line = train(cli, data, tmp_path / "runs").one_line_error()
    assert str(data) in line and "'only'" in line and "two classes" in line
    assert leftovers(tmp_path / "runs") == []


def test_class_folders_without_images(cli, tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir()
    line = train(cli, data, tmp_path / "runs").one_line_error()
    assert str(data) in line and "no images" in line


def test_folder_without_class_subfolders(cli, tmp_path):
    data = tmp_path / "flat"
    data.mkdir()
    Image.new("RGB", (36, 36)).save(data / "x.png")
    line = train(cli, data, tmp_path / "runs").one_line_error()
    assert str(data) in line and "1 loose images" in line and "sub-folder per class" in line


def test_nonexistent_data_path(cli, tmp_path):
    line = train(cli, tmp_path / "nowhere", tmp_path / "runs").one_line_error()
    assert str(tmp_path / "nowhere") in line and "no such file or folder" in line
    assert leftovers(tmp_path / "runs") == []


def test_unsupported_data_file(cli, tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_bytes(b"PK")
    line = train(cli, f, tmp_path / "runs").one_line_error()
    assert str(f) in line and ".xlsx" in line and ".csv" in line


def _unreadable(path):
    """A file in a class folder that cannot be read: no permission (or, as root, who can read
    anything, a dangling link)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        Image.new("RGB", (36, 36)).save(path)
        path.chmod(0)
    else:
        os.symlink(path.parent / "gone" / "missing.png", path)


def test_unreadable_file(cli, make_folder, tmp_path):
    data = make_folder()
    _unreadable(data / "a" / "locked.png")
    runs = tmp_path / "runs"
    line = train(cli, data, runs).one_line_error()
    assert str(data / "a" / "locked.png") in line and "cannot be read" in line
    assert leftovers(runs) == []


def test_unreadable_file_with_skip_bad_uncached_strategy(cli, make_folder, tmp_path):
    data = make_folder()
    _unreadable(data / "a" / "locked.png")
    r = cli("train", data, "--out", tmp_path / "runs" / "run", "--strategy", "scratch",
            "--epochs", "1", *TINY, "--skip-bad")
    assert_skipped_listed(r, str(data / "a" / "locked.png"))


def test_unreadable_file_with_skip_bad_cached_strategy(cli, make_folder, tmp_path):
    data = make_folder()
    _unreadable(data / "a" / "locked.png")
    r = train(cli, data, tmp_path / "runs", "--skip-bad")
    assert_skipped_listed(r, str(data / "a" / "locked.png"))


# -- oversized images ---------------------------------------------------------------------------

def test_decompression_bomb(cli, make_folder, tmp_path):
    data = make_folder()
    Image.new("1", (20000, 20000)).save(data / "a" / "bomb.png")  # 400 MP in ~50 kB
    runs = tmp_path / "runs"
    line = train(cli, data, runs).one_line_error()
    assert str(data / "a" / "bomb.png") in line and "--max-pixels" in line
    assert leftovers(runs) == []


def test_decompression_bomb_with_skip_bad_is_listed(cli, make_folder, tmp_path):
    data = make_folder()
    Image.new("1", (20000, 20000)).save(data / "a" / "bomb.png")
    r = train(cli, data, tmp_path / "runs", "--skip-bad")
    assert_skipped_listed(r, str(data / "a" / "bomb.png"))


def test_max_pixels_lowered_on_normal_image(cli, make_folder, tmp_path):
    data = make_folder(size=36)
    line = train(cli, data, tmp_path / "runs", "--max-pixels", "1000").one_line_error()
    assert "36x36" in line and "--max-pixels" in line
    assert str(data) in line
    assert leftovers(tmp_path / "runs") == []


def test_max_pixels_message_states_the_limit(cli, make_folder, tmp_path):
    data = make_folder(size=36)
    line = train(cli, data, tmp_path / "runs", "--max-pixels", "1000").one_line_error()
    assert "0 MP" not in line


def test_max_pixels_applies_to_cached_images(cli, make_folder, tmp_path):
    data = make_folder(size=36)
    assert train(cli, data, tmp_path / "runs", name="first").rc == 0
    line = train(cli, data, tmp_path / "runs", "--max-pixels", "1000",
                 name="second").one_line_error()
    assert "36x36" in line


# -- CSV ------------------------------------------------------------------------------------------

def _csv(data, extra_rows=()):
    rows = ["path,label"] + [f"{c}/{i}.png,{c}" for c in ("a", "b") for i in range(6)]
    f = data / "labels.csv"
    f.write_text("\n".join(rows + list(extra_rows)) + "\n")
    return f


def test_csv_trains(cli, make_folder, tmp_path):
    f = _csv(make_folder())
    r = train(cli, f, tmp_path / "runs")
    assert r.rc == 0, r
    assert "12 images in 2 classes" in r.out


def test_csv_row_with_missing_file(cli, make_folder, tmp_path):
    data = make_folder()
    f = _csv(data, ["a/missing.png,a"])
    runs = tmp_path / "runs"
    line = train(cli, f, runs).one_line_error()
    assert str(f) in line and "row 13" in line and str(data / "a" / "missing.png") in line
    assert "--skip-bad" in line
    assert leftovers(runs) == []


def test_csv_row_with_missing_file_skip_bad_is_listed(cli, make_folder, tmp_path):
    data = make_folder()
    f = _csv(data, ["a/missing.png,a"])
    r = train(cli, f, tmp_path / "runs", "--skip-bad")
    assert_skipped_listed(r, "missing.png")


def test_csv_row_without_label(cli, make_folder, tmp_path):
    data = make_folder()
    f = _csv(data, ["a/0.png"])
    line = train(cli, f, tmp_path / "runs").one_line_error()
    assert str(f) in line and "row 13" in line and "path,label" in line


def test_csv_with_no_rows(cli, tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("path,label\n")
    line = train(cli, f, tmp_path / "runs").one_line_error()
    assert str(f) in line and "no images" in line


# -- all of a class unreadable ------------------------------------------------------------------

def test_all_of_a_class_unreadable_names_the_files(cli, make_folder, tmp_path):
    data = make_folder(n=4)
    for p in (data / "b").iterdir():
        truncate(p)
    r = train(cli, data, tmp_path / "runs", "--skip-bad")
    r.one_line_error()
    assert str(data / "b" / "0.png") in r.out + r.err


# -- options and run directories ---------------------------------------------------------------

def test_unknown_backbone_suggests_close_name(cli, make_folder, tmp_path):
    r = cli("train", make_folder(), "--out", tmp_path / "runs" / "x", "--backbone",
            "efficientnet_lit0", "--image-size", "32", "--quiet")
    line = r.one_line_error()
    assert "Unknown backbone 'efficientnet_lit0'" in line
    assert "Did you mean 'efficientnet_lite0'?" in line and "headstart models" in line
    assert leftovers(tmp_path / "runs") == []


def test_unknown_backbone_python():
    import headstart
    with pytest.raises(headstart.UnknownBackboneError) as e:
        headstart.create_backbone("efficientnet-lite0x")
    assert "Did you mean 'efficientnet_lite0'?" in str(e.value)
    assert isinstance(e.value, KeyError) and not str(e.value).startswith('"')


def test_unknown_backbone_design_example():
    from headstart import UnknownBackboneError
    msg = str(UnknownBackboneError("efficientnet_lite9", ["efficientnet_lite0",
                                                          "efficientnet_lite1",
                                                          "efficientnet_lite2", "tiny_cnn"]))
    assert "Did you mean 'efficientnet_lite0'?" in msg


@pytest.mark.parametrize("value", ["0", "4", "some"])
def test_bad_unfreeze_value(cli, make_folder, tmp_path, value):
    r = cli("train", make_folder(), "--out", tmp_path / "runs" / "x", "--strategy", "fine_tune",
            "--unfreeze", value, "--epochs", "1", *TINY)
    line = r.one_line_error()
    assert "--unfreeze" in line and repr(value) in line and "stem, block1, block2" in line
    assert leftovers(tmp_path / "runs") == []


@pytest.mark.parametrize("args, words", [
    (["--image-size", "big"], ["input_size", "'big'"]),
    (["--val-fraction", "1.5"], ["val_fraction", "1.5"]),
    (["--epochs", "0"], ["epochs", "0"]),
    (["--lr", "-1"], ["learning rate", "-1"]),
])
def test_bad_option_values(cli, make_folder, tmp_path, args, words):
    base = ["--backbone", "tiny_cnn", "--quiet", "--strategy", "fine_tune"]
    if "--image-size" not in args:
        base += ["--image-size", "32"]
    r = cli("train", make_folder(n=2), "--out", tmp_path / "runs" / "x", *base, *args)
    line = r.one_line_error()
    for w in words:
        assert w in line, line
    assert leftovers(tmp_path / "runs") == []


def test_existing_out_needs_overwrite(cli, make_folder, tmp_path):
    data = make_folder()
    runs = tmp_path / "runs"
    assert train(cli, data, runs).rc == 0
    before = (runs / "run" / "model.safetensors").read_bytes()
    line = train(cli, data, runs).one_line_error()
    assert str(runs / "run") in line and "--overwrite" in line
    assert (runs / "run" / "model.safetensors").read_bytes() == before
    r = train(cli, make_folder("other", classes=("x", "y", "z")), runs, "--overwrite")
    assert r.rc == 0, r
    assert (runs / "run" / "labels.json").read_text().count('"') == 6  # x, y, z
    assert leftovers(runs) == ["run"]


def test_missing_run_directory(cli, tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (36, 36)).save(img)
    line = cli("predict", "--run", tmp_path / "no-run", img).one_line_error()
    assert str(tmp_path / "no-run") in line and "headstart train" in line
    line = cli("evaluate", tmp_path / "no-run", tmp_path).one_line_error()
    assert str(tmp_path / "no-run") in line


def test_predict_missing_image(cli, tiny_runs, tmp_path):
    r = cli("predict", "--run", tiny_runs["linear_probe"], tmp_path / "nope.jpg")
    line = r.one_line_error()
    assert str(tmp_path / "nope.jpg") in line and "does not exist" in line


def test_evaluate_unknown_class(cli, tiny_runs, make_folder):
    data = make_folder(classes=("a", "zebra"))
    line = cli("evaluate", tiny_runs["linear_probe"], data).one_line_error()
    assert "zebra" in line and str(data) in line


def test_evaluate_on_one_class(cli, tiny_runs, make_folder):
    data = make_folder(classes=("a",))
    r = cli("evaluate", tiny_runs["linear_probe"], data, "--json")
    assert r.rc == 0, r
    assert r.json()["n"] == 6


def test_debug_shows_traceback(tmp_path):
    from headstart import DataError
    from headstart.cli.main import main
    with pytest.raises(DataError):
        main(["--debug", "train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *LP])
