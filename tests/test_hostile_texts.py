"""Hostile texts through the CLI: JSONL and CSV tables that are broken, oddly encoded, with NUL
bytes, repeated or missing columns, huge fields; text folders with hidden and loose entries;
labels that look like paths (which pretrain's source sample must never follow).

The same promises as test_hostile_data (hostile.run_case).
"""
from __future__ import annotations

import pytest

import hostile as H
from hostile import TEXT

CASES: dict[str, tuple] = {}
case = H.registry(CASES)


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


@case("error", "split folders", "texts/train as the data")
def text_split_root_passed_as_the_data(e):
    for split in ("train", "test"):
        for i, (t, y) in enumerate(H.words_rows()):
            H.write(e.tmp / "texts" / split / y / f"{i}.txt", t)
    return _text_train(e, e.tmp / "texts")


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


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, cli, tmp_path, tiny_runs, text_run_src):
    H.run_case(CASES[name], cli, tmp_path, tiny_runs["linear_probe"], text_run_src)
