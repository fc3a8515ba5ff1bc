"""Hostile runs and outputs through the CLI: where the run goes (--out a file, the data, a
foreign folder), damaged run files read back by predict and evaluate, planted checkpoints,
inputs of the other modality, flags offered by errors, unsafe weights and downloads.

The same promises as test_hostile_data (hostile.run_case).
"""
from __future__ import annotations

import os
import re

import pytest

import hostile as H
from hostile import LP

CASES: dict[str, tuple] = {}
case = H.registry(CASES)


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
def out_is_an_empty_folder_with_overwrite(e):
    e.out().mkdir(parents=True)
    return e.train(e.folder(), "--overwrite")


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


@case("error", "config.yaml", "input_size")
def config_bad_input_size(e):
    run = e.image_run()
    text = re.sub(r"(?m)^input_size: .*$", "input_size: huge", (run / "config.yaml").read_text())
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


# -- option values that would fail deep inside torch or numpy --------------------------------
@case("error", "seed")
def train_negative_seed(e):
    return e.train(e.folder(), "--seed", "-1")


@case("error", "seed")
def train_huge_seed(e):
    return e.train(e.folder(), "--seed", str(10**30))


@case("error", "workers")
def train_negative_workers(e):
    return e.train(e.folder(), "--workers", "-1")


@case("error", "lr")
def train_infinite_lr(e):
    return e.train(e.folder(), "--strategy", "fine_tune", "--lr", "inf")


@case("error", "max_pixels")
def train_zero_max_pixels(e):
    return e.train(e.folder(), "--max-pixels", "0")


@case("error", "--seed")
def rank_negative_seed(e):
    return ["rank", e.folder(), "--candidates", "tiny_cnn", "--seed", "-1", "--quiet"]


@case("error", "--image-size")
def rank_zero_image_size(e):
    return ["rank", e.folder(), "--candidates", "tiny_cnn", "--image-size", "0", "--quiet"]


@case("error", "--per-class")
def make_dataset_negative_per_class(e):
    return ["make-dataset", "animal-mnist", e.tmp / "am", "--per-class", "-1"]


@case("error", "is a file")
def make_dataset_onto_a_file(e):
    return ["make-dataset", "bbc-news", H.write(e.tmp / "news.txt", "mine"), "--per-class", "1"]


@case("error", "a folder")
def predict_text_run_on_a_folder(e):
    return ["predict", "--run", e.text_run(), e.folder()]


@case("error", "no longer there")
def run_from_a_source_model_that_moved(e):
    run = e.image_run()
    text = (run / "config.yaml").read_text().replace("backbone: tiny_cnn",
                                                     f"backbone: {e.tmp / 'gone' / 'src'}")
    (run / "config.yaml").write_text(text)
    return ["predict", "--run", run, H.write(e.tmp / "x.png", H.png_bytes())]


@case("error", "too long")
def out_name_too_long(e):
    return e.train(e.folder(), name="r" * 250)


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


@case("error", "itself")
def source_model_naming_itself(e):
    run = e.image_run()
    text = (run / "config.yaml").read_text().replace("backbone: tiny_cnn", f"backbone: {run}")
    (run / "config.yaml").write_text(text)
    return e.train(e.folder(), "--backbone", run)


@case("error", "config.yaml", "input_size")
def source_model_with_bad_input_size(e):
    run = e.image_run()
    text = re.sub(r"(?m)^input_size: .*$", "input_size: [1, 2]", (run / "config.yaml").read_text())
    (run / "config.yaml").write_text(text)
    return e.train(e.folder(), "--backbone", run)


def _hf_folder(e, **files) -> "Path":
    import json
    import shutil

    from headstart.backbones.text import minilm_dir
    d = e.tmp / "hf"
    d.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json", "config.json"):
        if (minilm_dir() / name).is_file():
            shutil.copy(minilm_dir() / name, d / name)
    for name, data in files.items():
        H.write(d / name.replace("_", "."), data)
    return d


@case("error", "tokenizer")
def hf_folder_with_a_damaged_tokenizer(e):
    d = _hf_folder(e, tokenizer_json=b'{"version": "1.0", "model": {"type": "nope"}}',
                   model_safetensors=b"x")
    (d / "vocab.txt").unlink()
    return ["train", H.text_csv(e.tmp / "t.csv", H.words_rows()), "--out", e.out(),
            "--backbone", d, "--strategy", "linear_probe", "--quiet"]


@case("error", "model folder is damaged")
def hf_folder_with_damaged_safetensors(e):
    d = _hf_folder(e, model_safetensors=b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, cli, tmp_path, tiny_runs, text_run_src):
    H.run_case(CASES[name], cli, tmp_path, tiny_runs["linear_probe"], text_run_src)
