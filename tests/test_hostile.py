"""A corpus of hostile inputs, each run through the CLI as a user would.

Every case must end in exit 0, or in exit 2 with one `error:` line (never a traceback) that
names what is wrong and offers only flags the command has. Whatever the outcome, nothing
outside the runs folder changes (the user's data is never touched, nothing is written
elsewhere) and the runs folder holds no leftovers (partial directories, locks, old runs).
Permission cases are skipped when running as root, which reads every file.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import hostile as H
from conftest import TINY, write_folder

LP = ["--strategy", "linear_probe", "--epochs", "1", *TINY]
TEXT = ["--backbone", "tiny_text", "--strategy", "linear_probe", "--quiet"]
CASES: dict[str, tuple] = {}


def case(expect: str = "error", *words: str, writes: tuple[str, ...] = ()):
    """Register a case: its builder returns the CLI arguments (and optionally a check of the
    result); `expect` is 'ok' or 'error'; `words` must appear in the error line (or output)."""
    def register(fn):
        CASES[fn.__name__] = (fn, expect, words, writes)
        return fn
    return register


class Env:
    def __init__(self, tmp: Path, image_run: Path, text_run_src) -> None:
        self.tmp, self.runs = tmp, tmp / "runs"
        self._image_run, self._text_run = image_run, text_run_src

    def folder(self, name="data", classes=("a", "b"), n=4, **kw) -> Path:
        return write_folder(self.tmp / name, classes, n, **kw)

    def out(self, name="run") -> Path:
        return self.runs / name

    def train(self, data, *extra, name="run"):
        return ["train", data, "--out", self.out(name), *LP, *extra]

    def image_run(self) -> Path:
        """A copy of a finished image run (tiny_cnn, linear_probe), inside runs/."""
        dst = self.runs / "image-run"
        if not dst.exists():
            shutil.copytree(self._image_run, dst)
        return dst

    def text_run(self) -> Path:
        dst = self.runs / "text-run"
        if not dst.exists():
            shutil.copytree(self._text_run(), dst)
        return dst


# -- images in a class folder ----------------------------------------------------------------
@case("error", "empty")
def zero_byte_image(e):
    d = e.folder()
    H.write(d / "a" / "zero.png", b"")
    return e.train(d)


@case("error", "truncated")
def truncated_png(e):
    d = e.folder()
    data = (d / "a" / "0.png").read_bytes()
    (d / "a" / "0.png").write_bytes(data[:len(data) // 2])
    return e.train(d)


@case("error", "half.jpg")
def truncated_jpeg(e):
    d = e.folder()
    data = H.png_bytes((64, 64), format="JPEG")
    H.write(d / "b" / "half.jpg", data[:len(data) // 2])
    return e.train(d)


@case("ok")
def png_bytes_with_jpg_extension(e):
    d = e.folder()
    H.write(d / "a" / "really-a-png.jpg", H.png_bytes())
    return e.train(d)


@case("error", "notes.png", "not an image")
def text_with_image_extension(e):
    d = e.folder()
    H.write(d / "a" / "notes.png", "just some words, not pixels")
    return e.train(d)


@case("error", "pixels", "--max-pixels")
def huge_dimensions(e):
    d = e.folder()
    H.write(d / "a" / "bomb.png", H.huge_png_header(100_000, 100_000))
    return e.train(d)


@case("ok")
def cmyk_jpeg(e):
    d = e.folder()
    H.write(d / "a" / "cmyk.jpg", H.cmyk_jpeg())
    return e.train(d)


@case("ok")
def sixteen_bit_png(e):
    d = e.folder()
    H.write(d / "a" / "deep.png", H.png_bytes(mode="I;16"))
    return e.train(d)


@case("ok")
def float_tiff_named_png(e):
    d = e.folder()
    H.write(d / "b" / "float.png", H.png_bytes(mode="F", format="TIFF"))
    return e.train(d)


@case("ok")
def palette_png_with_transparency(e):
    d = e.folder()
    H.write(d / "a" / "pal.png", H.palette_png_with_transparency())
    return e.train(d)


@case("ok")
def animated_gif(e):
    d = e.folder()
    H.write(d / "b" / "anim.gif", H.animated_gif())
    return e.train(d)


@case("ok")
def one_pixel_and_grey_alpha_and_1bit(e):
    d = e.folder()
    H.write(d / "a" / "dot.png", H.png_bytes((1, 1)))
    H.write(d / "a" / "la.png", H.png_bytes(mode="LA"))
    H.write(d / "b" / "bits.png", H.png_bytes(mode="1"))
    return e.train(d)


@case("ok")
def exif_orientation_out_of_range(e):
    d = e.folder()
    H.write(d / "a" / "o9.jpg", H.exif_orientation_jpeg(9))
    H.write(d / "a" / "o6.jpg", H.exif_orientation_jpeg(6))
    return e.train(d)


@case("ok")
def uppercase_extension_and_webp(e):
    d = e.folder()
    H.write(d / "a" / "UP.PNG", H.png_bytes())
    H.write(d / "b" / "w.webp", H.png_bytes(format="WEBP"))
    return e.train(d)


@case("error", "not an image file", "--skip-bad")
def unknown_extension_file(e):
    d = e.folder()
    H.write(d / "a" / "scan.tiff", H.png_bytes(format="TIFF"))
    return e.train(d)


@case("error", "dangling.png")
def dangling_symlink(e):
    d = e.folder()
    os.symlink(e.tmp / "nowhere.png", d / "a" / "dangling.png")
    return e.train(d)


def _counts_add_up(r, e, expected_images: int, *notes: str):
    assert f"{expected_images} images in" in r.out, r.out
    for n in notes:
        assert n in r.out, (n, r.out)


@case("ok")
def symlinked_subfolder_in_class(e):
    d = e.folder()
    extra = write_folder(e.tmp / "elsewhere", ("a",), 3)
    os.symlink(extra / "a", d / "a" / "more")
    return e.train(d), lambda r, e: _counts_add_up(r, e, 11)


@case("ok")
def symlink_loop_in_class(e):
    d = e.folder()
    os.symlink(d / "a", d / "a" / "loop")
    os.symlink(d / "b", d / "a" / "to-b")
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8, "loop", "to-b", "not read twice")


@case("ok")
def hidden_class_folder(e):
    d = e.folder()
    write_folder(d, (".secret",), 3)
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8, ".secret", "hidden folder, 3 file(s)")


@case("ok")
def loose_files_in_root(e):
    d = e.folder()
    H.write(d / "stray.png", H.png_bytes())
    H.write(d / "README.md", "about this data")
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8, "stray.png", "README.md",
                                                  "2 item(s)")


@case("ok")
def hidden_subfolder_inside_class(e):
    d = e.folder()
    write_folder(d / "a", (".ipynb_checkpoints",), 2)
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8, ".ipynb_checkpoints")


@case("ok")
def fifo_in_class(e):
    d = e.folder()
    os.mkfifo(d / "a" / "pipe.png")
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8, "pipe.png", "not a regular file")


@case("ok")
def unicode_long_and_spaced_class_names(e):
    d = e.folder(classes=("ünïcødé ✓", "x" * 200, "with space"))
    return e.train(d)


@case("error", "hold no images")
def class_with_only_hidden_files(e):
    d = e.folder()
    H.write(d / "c" / ".DS_Store", b"\x00\x01")
    return e.train(d)


@case("error", "only one class")
def single_class(e):
    return e.train(e.folder(classes=("a",)))


@case("error", "no class sub-folders")
def empty_data_folder(e):
    (e.tmp / "data").mkdir()
    return e.train(e.tmp / "data")


@case("error", "no such file")
def data_path_missing(e):
    return e.train(e.tmp / "missing")


@case("error", "expected a folder")
def data_is_an_odd_file(e):
    return e.train(H.write(e.tmp / "data.bin", b"\x00" * 10))


@case("ok")
def data_root_is_a_symlink(e):
    d = e.folder()
    os.symlink(d, e.tmp / "link")
    return e.train(e.tmp / "link")


@case("ok")
def newline_in_file_name(e):
    d = e.folder()
    H.write(d / "a" / "two\nlines.png", H.png_bytes())
    return e.train(d)


@case("error", "cannot be read")
def unreadable_image(e):
    if os.geteuid() == 0:
        pytest.skip("running as root: every file is readable")
    d = e.folder()
    (d / "a" / "0.png").chmod(0)
    return e.train(d)


@case("error", "cannot list")
def unreadable_class_folder(e):
    if os.geteuid() == 0:
        pytest.skip("running as root: every folder is readable")
    d = e.folder()
    (d / "a").chmod(0)
    return e.train(d)


# -- CSV of image paths ------------------------------------------------------------------------
def _image_csv(e, header: str | None, *, sep=",", encoding="utf-8", bom=b""):
    d = e.folder()
    rows = [(str(p.relative_to(e.tmp)), p.parent.name) for p in sorted(d.rglob("*.png"))]
    text = ((header + "\n") if header else "") + "\n".join(sep.join(r) for r in rows) + "\n"
    return H.write(e.tmp / ("images.tsv" if sep == "\t" else "images.csv"),
                   bom + text.encode(encoding))


@case("ok")
def csv_header_filename_class(e):
    return e.train(_image_csv(e, "filename,class"))


@case("ok")
def csv_header_swapped_columns(e):
    d = e.folder()
    rows = [f"{p.parent.name},{p.relative_to(e.tmp)}" for p in sorted(d.rglob("*.png"))]
    return e.train(H.write(e.tmp / "swapped.csv", "label,path\n" + "\n".join(rows)))


@case("error", "header", "path,label")
def csv_unknown_header(e):
    return e.train(_image_csv(e, "picture,kind"))


@case("ok")
def csv_with_bom_and_header(e):
    return e.train(_image_csv(e, "path,label", bom=b"\xef\xbb\xbf"))


@case("error", "NUL")
def csv_with_nul_byte(e):
    p = _image_csv(e, "path,label")
    p.write_bytes(p.read_bytes().replace(b",a\n", b",a\x00\n", 1))
    return e.train(p)


@case("error", "UTF-8")
def csv_not_utf8(e):
    p = _image_csv(e, "path,label")
    p.write_bytes(p.read_bytes() + "caf\xe9.png,a\n".encode("latin-1"))
    return e.train(p)


@case("error", "not a file")
def csv_row_names_a_device(e):
    p = _image_csv(e, "path,label")
    p.write_text(p.read_text() + "/dev/zero,a\n")
    return e.train(p)


@case("error", "row 9")
def csv_row_path_too_long(e):
    p = _image_csv(e, "path,label")
    p.write_text(p.read_text() + ("x" * 5000) + ".png,a\n")
    return e.train(p)


@case("error", "expected 'path,label'")
def csv_row_without_label(e):
    p = _image_csv(e, "path,label")
    p.write_text(p.read_text() + "data/a/0.png\n")
    return e.train(p)


@case("error", "the file is empty")
def csv_empty_file(e):
    return e.train(H.write(e.tmp / "empty.csv", b""))


@case("error", "not a file")
def csv_row_names_a_folder(e):
    p = _image_csv(e, "path,label")
    p.write_text(p.read_text() + "data/a,a\n")
    return e.train(p)


# -- texts -----------------------------------------------------------------------------------
def _text_train(e, data, *extra):
    return ["train", data, "--out", e.out(), *TEXT, *extra]


@case("error", "line 2", "not valid JSON")
def jsonl_invalid_line(e):
    return _text_train(e, H.jsonl(e.tmp / "t.jsonl", [{"text": "a b", "label": "x"}, "{oops"]))


@case("error", "nested too deeply")
def jsonl_deeply_nested(e):
    return _text_train(e, H.jsonl(e.tmp / "t.jsonl", ["[" * 100_000 + "]" * 100_000]))


@case("error", "expected a JSON object")
def jsonl_array_line(e):
    return _text_train(e, H.jsonl(e.tmp / "t.jsonl", [["a", "b"]]))


@case("error", "empty or only whitespace", "--skip-bad")
def jsonl_null_text(e):
    rows = [{"text": t, "label": y} for t, y in H.words_rows()] + [{"text": None, "label": "x"}]
    return _text_train(e, H.jsonl(e.tmp / "t.jsonl", rows))


@case("error", "NUL")
def text_csv_with_nul(e):
    p = H.text_csv(e.tmp / "t.csv", H.words_rows())
    p.write_bytes(p.read_bytes().replace(b"goal", b"go\x00al", 1))
    return _text_train(e, p)


@case("error", "--encoding")
def text_csv_not_utf8(e):
    return _text_train(e, H.text_csv(e.tmp / "t.csv", H.words_rows() + [("café crème", "x")],
                                     encoding="latin-1"))


@case("ok")
def text_csv_utf16_with_bom(e):
    return _text_train(e, H.text_csv(e.tmp / "t.csv", H.words_rows(), encoding="utf-16"))


@case("ok")
def text_csv_utf8_bom(e):
    return _text_train(e, H.text_csv(e.tmp / "t.csv", H.words_rows(), bom=b"\xef\xbb\xbf"))


@case("error", "more than once")
def text_csv_duplicate_header(e):
    rows = [(t, t, y) for t, y in H.words_rows()]
    return _text_train(e, H.text_csv(e.tmp / "t.csv", rows, header="text,text,label"))


@case("ok")
def text_csv_huge_field(e):
    rows = H.words_rows() + [("word " * 40_000, "sport")]
    return _text_train(e, H.text_csv(e.tmp / "t.csv", rows), "--truncate")


@case("ok")
def labels_like_paths_and_unicode(e):
    rows = [(t, {"sport": "../../escape", "tech": "/etc/évil ✓"}[y]) for t, y in H.words_rows()]
    return _text_train(e, H.text_csv(e.tmp / "t.csv", rows))


@case("error", "no label column", "--label-column")
def text_csv_without_label_column(e):
    return _text_train(e, H.text_csv(e.tmp / "t.csv", [(t,) for t, _ in H.words_rows()],
                                     header="text"))


@case("error", "the file is empty")
def text_csv_empty(e):
    return _text_train(e, H.write(e.tmp / "t.csv", b""))


@case("ok")
def text_folder_with_hidden_class_and_loose_file(e):
    for i, (t, y) in enumerate(H.words_rows()):
        H.write(e.tmp / "texts" / y / f"{i}.txt", t)
    H.write(e.tmp / "texts" / ".trash" / "old.txt", "thrown away")
    H.write(e.tmp / "texts" / "notes.txt", "not in a class")
    return (_text_train(e, e.tmp / "texts"),
            lambda r, e: _counts_add_up_texts(r, 8, ".trash", "notes.txt"))


def _counts_add_up_texts(r, n, *notes):
    assert f"{n} texts in" in r.out, r.out
    for x in notes:
        assert x in r.out, (x, r.out)


@case("ok")
def very_long_label(e):
    rows = [(t, y * 300) for t, y in H.words_rows()]
    return _text_train(e, H.text_csv(e.tmp / "t.csv", rows))


# -- pretrain: labels never become paths outside the run ---------------------------------------
@case("ok")
def pretrain_labels_that_look_like_paths(e):
    d = e.folder(n=5)
    absolute = e.tmp / "abs-outside"
    rows = [f"{p.relative_to(e.tmp)},{'../../outside' if p.parent.name == 'a' else absolute}"
            for p in sorted(d.rglob("*.png"))]
    data = H.write(e.tmp / "paths.csv", "path,label\n" + "\n".join(rows) + "\n")
    argv = ["pretrain", data, "--arch", "tiny_cnn", "--out", e.out(), "--image-size", "32",
            "--epochs", "1", "--quiet"]

    def check(r, e):
        sample = e.out() / "source_sample"
        assert sample.is_dir() and all(sample in p.parents for p in sample.rglob("*"))
        assert not (e.tmp / "outside").exists() and not absolute.exists()
        assert not (e.tmp.parent / "outside").exists()
    return argv, check


# -- where the run goes ----------------------------------------------------------------------
@case("error", "is a file")
def out_is_a_file(e):
    f = H.write(e.tmp / "notes.txt", "mine")
    return ["train", e.folder(), "--out", f, *LP, "--overwrite"]


@case("error", "is the data itself")
def out_is_the_data_with_overwrite(e):
    d = e.folder()
    return ["train", d, "--out", d, *LP, "--overwrite"]


@case("error", "not a headstart run")
def overwrite_a_folder_that_is_not_a_run(e):
    H.write(e.tmp / "photos" / "holiday.jpg", H.png_bytes(format="JPEG"))
    return ["train", e.folder(), "--out", e.tmp / "photos", *LP, "--overwrite"]


@case("ok")
def overwrite_a_previous_run(e):
    e.image_run()
    return e.train(e.folder(), "--overwrite", name="image-run")


@case("error", "inside the data")
def out_inside_the_data(e):
    d = e.folder()
    return ["train", d, "--out", d / "runs-here", *LP]


@case("error", "in the way")
def partial_is_a_file(e):
    H.write(e.runs / ".run.partial", "planted")
    return e.train(e.folder())


@case("ok")
def out_is_an_empty_folder(e):
    e.out().mkdir(parents=True)
    return e.train(e.folder())


@case("error", "runs")
def out_parent_is_a_file(e):
    H.write(e.runs, "a file where the runs folder should be")
    return e.train(e.folder(), name="run")


# -- damaged runs, read back by predict and evaluate -----------------------------------------
def _predict_damaged(e, name: str, data: bytes | str):
    run = e.image_run()
    H.write(run / name, data)
    img = H.write(e.tmp / "x.png", H.png_bytes())
    return ["predict", "--run", run, img]


@case("error", "model.safetensors", "damaged")
def truncated_model(e):
    run = e.image_run()
    data = (run / "model.safetensors").read_bytes()
    return _predict_damaged(e, "model.safetensors", data[:len(data) // 2])


@case("error", "model.safetensors")
def zero_byte_model(e):
    return _predict_damaged(e, "model.safetensors", b"")


@case("error", "labels.json", "damaged")
def labels_not_json(e):
    return _predict_damaged(e, "labels.json", "[not json")


@case("error", "labels.json")
def labels_a_mapping(e):
    return _predict_damaged(e, "labels.json", '{"a": 1}')


@case("error", "does not fit")
def labels_more_than_the_model(e):
    return _predict_damaged(e, "labels.json", '["a", "b", "c"]')


@case("error", "config.yaml", "damaged")
def config_python_object_tag(e):
    return _predict_damaged(e, "config.yaml", "backbone: !!python/object/apply:os.system "
                            "['touch HACKED']\n")


@case("error", "config.yaml")
def config_a_list(e):
    return _predict_damaged(e, "config.yaml", "- one\n- two\n")


@case("error", "Unknown backbone")
def config_unknown_backbone(e):
    run = e.image_run()
    text = (run / "config.yaml").read_text().replace("backbone: tiny_cnn", "backbone: gone_net")
    return _predict_damaged(e, "config.yaml", text)


@case("error", "config.yaml", "image_size")
def config_bad_image_size(e):
    run = e.image_run()
    text = re.sub(r"(?m)^image_size: .*$", "image_size: huge", (run / "config.yaml").read_text())
    return _predict_damaged(e, "config.yaml", text)


@case("error", "metrics.json")
def metrics_damaged(e):
    return _predict_damaged(e, "metrics.json", b"\xff\xfe\x00garbage")


@case("error", "not a run directory")
def run_is_a_file(e):
    f = H.write(e.runs / "file-run", "not a folder")
    return ["predict", "--run", f, H.write(e.tmp / "x.png", H.png_bytes())]


def _planted_partial(e, ckpt: bytes | None, config: str | None = None):
    """An interrupted run's partial folder with the same settings, then a planted file."""
    d = e.folder()
    argv = e.train(d)
    from headstart.cli.main import main
    assert main([str(a) for a in argv]) == 0
    run, partial = e.out(), e.runs / ".run.partial"
    run.rename(partial)
    if ckpt is not None:
        H.write(partial / "checkpoint.pt", ckpt)
    if config is not None:
        H.write(partial / "config.yaml", config)
    return argv


@case("error", "checkpoint.pt", "--restart")
def planted_garbage_checkpoint(e):
    return _planted_partial(e, b"PK\x03\x04 this is not a checkpoint")


@case("error", "checkpoint.pt", "--restart")
def planted_pickle_checkpoint(e):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {e.tmp / 'HACKED'}",))
    return _planted_partial(e, pickle.dumps(Boom()))


@case("error", "not a headstart checkpoint", "--restart")
def planted_checkpoint_of_wrong_shape(e):
    import io

    import torch
    buf = io.BytesIO()
    torch.save([torch.zeros(2)], buf)
    return _planted_partial(e, buf.getvalue())


@case("error", "config.yaml", "--restart")
def planted_partial_config_tag(e):
    return _planted_partial(e, None, "!!python/object/apply:os.system ['touch HACKED']\n")


# -- predict and evaluate ----------------------------------------------------------------------
@case("error", "missing_file.txt", "--text")
def predict_text_run_missing_file(e):
    return ["predict", "--run", e.text_run(), e.tmp / "missing_file.txt"]


@case("ok")
def predict_text_run_literal_text_that_looks_like_a_file(e):
    return (["predict", "--run", e.text_run(), "--text", "missing_file.txt"],
            lambda r, e: r.out.startswith("missing_file.txt"))


@case("error", "text file", "classifies images")
def predict_image_run_on_a_text_file(e):
    return ["predict", "--run", e.image_run(), H.write(e.tmp / "a.txt", "words")]


@case("error", "an image", "classifies texts")
def predict_text_run_on_an_image(e):
    return ["predict", "--run", e.text_run(), H.write(e.tmp / "x.png", H.png_bytes())]


@case("error", "bad.png", "--skip-bad")
def predict_corrupt_image(e):
    return ["predict", "--run", e.image_run(), H.write(e.tmp / "bad.png", b"\x89PNG nope")]


@case("ok")
def predict_skip_bad_lists_the_corrupt_image(e):
    good = H.write(e.tmp / "good.png", H.png_bytes())
    bad = H.write(e.tmp / "bad.png", b"\x89PNG nope")
    return (["predict", "--run", e.image_run(), bad, good, "--skip-bad"],
            lambda r, e: ("bad.png" in r.err and str(good) in r.out and str(bad) not in r.out))


@case("error", "nothing to predict")
def predict_nothing(e):
    return ["predict", "--run", e.image_run()]


@case("error", "holds texts", "classifies images")
def evaluate_image_run_on_texts(e):
    return ["evaluate", e.image_run(), H.text_csv(e.tmp / "t.csv", H.words_rows())]


@case("error", "holds images", "classifies texts")
def evaluate_text_run_on_images(e):
    return ["evaluate", e.text_run(), e.folder()]


# -- every flag an error offers exists for the command that failed -----------------------
@case("error", "--max-pixels")
def evaluate_bomb(e):
    d = e.folder()
    H.write(d / "a" / "bomb.png", H.huge_png_header(100_000, 100_000))
    return ["evaluate", e.image_run(), d]


@case("error", "--skip-bad")
def evaluate_non_image_file(e):
    d = e.folder()
    H.write(d / "a" / "notes.doc", "words")
    return ["evaluate", e.image_run(), d]


@case("error", "--encoding")
def evaluate_text_not_utf8(e):
    rows = H.words_rows() + [("café", "sport")]
    return ["evaluate", e.text_run(), H.text_csv(e.tmp / "t.csv", rows, encoding="latin-1")]


@case("error", "--text-column")
def evaluate_text_without_text_column(e):
    rows = H.words_rows()
    return ["evaluate", e.text_run(), H.text_csv(e.tmp / "t.csv", rows, header="body_x,label")]


@case("error", "--encoding")
def predict_text_file_not_utf8(e):
    return ["predict", "--run", e.text_run(), H.write(e.tmp / "t.txt", "caf\xe9".encode("latin-1"))]


@case("error", "--max-pixels")
def predict_bomb(e):
    return ["predict", "--run", e.image_run(),
            H.write(e.tmp / "bomb.png", H.huge_png_header(100_000, 100_000))]


@case("error", "--skip-bad")
def rank_non_image_file(e):
    d = e.folder()
    H.write(d / "a" / "notes.doc", "words")
    return ["rank", d, "--candidates", "tiny_cnn", "--quiet"]


@case("ok")
def evaluate_reports_what_it_did_not_read(e):
    d = e.folder()
    H.write(d / "stray.png", H.png_bytes())
    return ["evaluate", e.image_run(), d], lambda r, e: "stray.png" in r.out


# -- backbones and weights -----------------------------------------------------------------
@case("error", "pytorch_model.bin", "pickle")
def hf_folder_with_pickle_weights(e):
    import json
    d = e.tmp / "hf"
    H.write(d / "config.json", json.dumps({"model_type": "bert", "num_hidden_layers": 2,
                                           "hidden_size": 32, "num_attention_heads": 2,
                                           "intermediate_size": 64, "vocab_size": 100}))
    H.write(d / "pytorch_model.bin", b"\x80\x04K\x01.")
    return ["train", H.text_csv(e.tmp / "t.csv", H.words_rows()), "--out", e.out(),
            "--backbone", d, "--strategy", "linear_probe", "--quiet"]


@case("error", "not a readable checkpoint")
def weights_garbage_file(e):
    return e.train(e.folder(), "--weights", H.write(e.tmp / "w.safetensors", b"garbage"))


@case("error", "not a readable checkpoint")
def weights_pickle_with_code(e):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {e.tmp / 'HACKED'}",))
    return e.train(e.folder(), "--weights", H.write(e.tmp / "w.pt", pickle.dumps(Boom())))


@case("error", "2 weights files")
def weights_folder_with_two_files(e):
    H.write(e.tmp / "w" / "a.pt", b"x")
    H.write(e.tmp / "w" / "b.pt", b"x")
    return e.train(e.folder(), "--weights", e.tmp / "w")


@case("error", "download failed")
def weights_url_nothing_listening(e):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return e.train(e.folder(), "--weights", f"http://127.0.0.1:{port}/model.safetensors")


# -- the test ----------------------------------------------------------------------------------
def snapshot(root: Path, skip: list[Path]) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(dirpath, d) not in skip]
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def offered_flags(line: str, command: str):
    """(command, flag) for every --flag a message offers: the failing command's, or, after a
    quoted `headstart OTHER ...` suggestion (up to its closing mark), OTHER's."""
    current = command
    for m in re.finditer(r"headstart ([a-z][a-z-]*)|(?<![\w-])(--[a-z][a-z-]*)|([`);])", line):
        if m.group(1):
            current = m.group(1)
        elif m.group(2):
            yield current, m.group(2)
        else:
            current = command


def command_flags(command: str) -> set[str]:
    from headstart.cli.main import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and command in a.choices)
    return {s for a in sub.choices[command]._actions for s in a.option_strings} | {"--debug"}


@pytest.fixture(scope="module")
def text_run_src(request):
    return lambda: request.getfixturevalue("tiny_text_run")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, cli, tmp_path, tiny_runs, text_run_src):
    build, expect, words, writes = CASES[name]
    e = Env(tmp_path, tiny_runs["linear_probe"], text_run_src)
    built = build(e)
    argv, check = built if isinstance(built, tuple) else (built, None)
    runs_before = {p.name for p in e.runs.iterdir()} if e.runs.is_dir() else set()
    before = snapshot(tmp_path, [e.runs])
    r = cli(*argv)
    assert r.rc in (0, 2), r  # never a traceback (exit 1)
    if expect == "error":
        line = r.one_line_error()
        for w in words:
            assert w in line, (w, line)
        for command, flag in offered_flags(line, str(argv[0])):
            assert flag in command_flags(command), (command, flag, line)
    else:
        assert r.rc == 0, r
        for w in words:
            assert w in r.out + r.err, (w, r)
        if check is not None:
            assert check(r, e) is not False, r
    assert snapshot(tmp_path, [e.runs]) == before, "something outside runs/ changed"
    assert not (tmp_path / "HACKED").exists() and not Path("HACKED").exists()
    if e.runs.is_dir():
        left = {p.name for p in e.runs.iterdir()} - runs_before
        assert all(not n.startswith(".") or n == ".run.partial" for n in left), left
