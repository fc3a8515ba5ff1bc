"""Hostile data through the CLI: broken and odd images, folders with hidden, loose, linked and
special entries, CSVs of image paths.

Every case ends in exit 0, or in exit 2 with one `error:` line naming what is wrong and
offering only flags the command has; nothing outside the runs folder changes and the runs
folder keeps no leftovers (hostile.run_case). Permission cases are skipped when running as
root, which reads every file.
"""
from __future__ import annotations

import os

import pytest

import hostile as H
from conftest import write_folder

CASES: dict[str, tuple] = {}
case = H.registry(CASES)


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


@case("error", "ps.png", "not an image")
def postscript_named_png(e):
    d = e.folder()
    H.write(d / "a" / "ps.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
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
def extreme_aspect_ratio_strips(e):
    from PIL import Image
    d = e.folder()
    Image.new("RGB", (1, 200_000), "white").save(d / "a" / "tall.png")
    Image.new("RGB", (150_000, 2), "black").save(d / "b" / "wide.png")
    return e.train(d, "--strategy", "fine_tune", "--epochs", "1")


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
    H.write(d / "a" / "photo.cr2", b"II*\x00\x10\x00\x00\x00CR")  # a camera raw: no decoder
    return e.train(d)


@case("error", "labels.xlsx", "a spreadsheet", "CSV UTF-8")
def spreadsheet_given_as_data(e):
    H.write(e.tmp / "labels.xlsx", b"PK\x03\x04 an Excel workbook")
    return e.train(e.tmp / "labels.xlsx")


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


@case("error", "split folders", "data/train as the data", "data/test to test")
def split_root_passed_as_the_data(e):
    # what `headstart make-dataset` writes: read as classes, 'train' vs 'test' is learnt
    e.folder("data/train")
    e.folder("data/test")
    return e.train(e.tmp / "data")


@case("ok")
def classes_named_train_and_test_holding_images(e):
    # images directly in folders called train/test: those are classes, read as such
    d = e.folder(classes=("train", "test"))
    return e.train(d), lambda r, e: _counts_add_up(r, e, 8)


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


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, cli, tmp_path, tiny_runs, text_run_src):
    H.run_case(CASES[name], cli, tmp_path, tiny_runs["linear_probe"], text_run_src)
