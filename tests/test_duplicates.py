"""Exact copies among the training examples: found by content (not by name), said in the log
and recorded in metrics.json; the split is left as the seed draws it."""
from __future__ import annotations

import shutil

from conftest import TINY, write_csv
from headstart import TrainConfig, api
from headstart.data import duplicates


def test_find_groups_conflicts_and_copies_across_splits():
    keys = ["x", "y", "x", "z", "y", "", ""]  # "" = not hashed (an unread input): never a copy
    labels = ["a", "a", "b", "a", "a", "a", "a"]
    names = [f"f{i}" for i in range(7)]
    in_val = [False, False, False, False, True, False, True]
    found = duplicates.find(keys, labels, names, in_val)
    assert found == {"groups": 2, "copies": 2, "conflicting": 1, "across_splits": 1,
                     "examples": [["f0 (a)", "f2 (b)"]]}
    line = duplicates.describe(found, "images")
    assert line.startswith("duplicates: 2 group(s) of identical images (2 extra copies); 1 "
                           "group(s) carry different labels")
    assert "f0 (a) = f2 (b)" in line and line.endswith("fix the labels or remove the copies")
    assert duplicates.find(["x", "y", "", ""], labels[:4], names[:4], in_val[:4]) is None
    same = duplicates.find(["x", "x"], ["a", "a"], ["p", "q"], [False, False])
    assert duplicates.describe(same, "texts").endswith("all in one split and under one label")


def test_an_image_copied_into_another_class_is_named(make_folder, tmp_path):
    """The same file under two classes (another name, same bytes): the run says which, and
    metrics.json records it; a folder without copies records nothing."""
    data = make_folder(n=6)
    clean = api.train(data, tmp_path / "clean", progress=False, log=lambda *_: None,
                      config=TrainConfig(backbone="tiny_cnn", strategy="linear_probe",
                                         input_size=32))
    assert "duplicates" not in clean.metrics
    shutil.copy(data / "a" / "0.png", data / "b" / "copy-of-a0.png")
    lines = []
    result = api.train(data, tmp_path / "dup", progress=False, log=lines.append,
                       config=TrainConfig(backbone="tiny_cnn", strategy="linear_probe",
                                          input_size=32))
    said = [line for line in lines if line.startswith("duplicates:")]
    assert len(said) == 1 and "carry different labels" in said[0], lines
    assert "0.png (a)" in said[0] and "copy-of-a0.png (b)" in said[0]
    assert result.metrics["duplicates"]["conflicting"] == 1
    assert result.metrics["train_examples"] + result.metrics["val_examples"] == 13  # none dropped
    tuned = api.train(data, tmp_path / "tuned", progress=False, log=lambda *_: None,
                      config=TrainConfig(backbone="tiny_cnn", strategy="fine_tune", epochs=1,
                                         input_size=32))  # no feature pass: hashed apart
    assert tuned.metrics["duplicates"] == result.metrics["duplicates"]


def test_repeated_texts_are_counted_whatever_the_strategy(tmp_path):
    texts = ["good film", "great film", "fine film", "bad film", "awful film", "dire film"] * 2
    labels = ["pos"] * 3 + ["neg"] * 3 + ["pos"] * 3 + ["neg"] * 3
    data = write_csv(tmp_path / "t.csv", texts, labels)
    for strategy in ("linear_probe", "fine_tune"):  # fine_tune: no feature pass over the texts
        result = api.train(data, tmp_path / strategy, progress=False, log=lambda *_: None,
                           config=TrainConfig(backbone="tiny_text", strategy=strategy, epochs=1))
        found = result.metrics["duplicates"]
        assert found["groups"] == 6 and found["copies"] == 6 and found["conflicting"] == 0


def test_evaluate_names_test_examples_the_model_was_trained_on(make_folder, tmp_path, cli):
    """The run keeps the content hashes of what it learned from (trained_on.json); evaluate
    counts test examples with the same content, whatever their names, warns, and gives the
    accuracy on the others. A run without the file (older) is evaluated as before; a damaged
    one is a one-line error."""
    import json
    data = make_folder(n=6)
    run = tmp_path / "run"
    assert cli("train", data, "--out", run, "--strategy", "linear_probe", *TINY).rc == 0
    hashes = json.loads((run / "trained_on.json").read_text())
    assert len(hashes) == 12 and hashes == sorted(hashes)
    test = make_folder("test", n=3, seed=99)  # images the run has not seen
    shutil.copy(data / "a" / "0.png", test / "a" / "seen-before.png")
    r = cli("evaluate", run, test, "--json")
    assert r.rc == 0, r.err
    seen = r.json()["copies_of_training"]
    assert seen["count"] == 1 and seen["of"] == 7
    assert seen["examples"] == [str(test / "a" / "seen-before.png")]
    assert 0.0 <= seen["accuracy_without"] <= 1.0
    r = cli("evaluate", run, test)
    assert "warning: 1 of the 7 images evaluated is an exact copy of one of the examples the " \
        "model was trained on" in r.out and "accuracy on the other 6:" in r.out
    (test / "a" / "seen-before.png").unlink()
    r = cli("evaluate", run, test, "--json")
    assert r.json()["copies_of_training"]["count"] == 0 and "warning" not in r.out
    (run / "trained_on.json").write_text("{not json")
    assert "trained_on.json" in cli("evaluate", run, test).one_line_error()
    (run / "trained_on.json").unlink()  # an older run: no check, no key
    r = cli("evaluate", run, test, "--json")
    assert r.rc == 0 and "copies_of_training" not in r.json()
