"""`headstart compare` end to end on real shipped data with the tiny backbones: the report, the
printed summary, the exit status, the negative case, texts, bad flags and interruptions."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import leftovers
from test_report import _chromium, check_figures, check_sentence_numbers, parse, untagged_numbers

TINY = ["--backbone", "tiny_cnn", "--image-size", "32", "--quiet"]
REPORT_KEYS = {"title", "data", "backbone", "modality", "classes", "test", "budget", "target",
               "time_note", "verdict", "arms", "difference", "probe_difference", "speedup",
               "classic_difference", "differences", "speedup_classic", "class_drops", "zero_shot",
               "confusion_note", "compute_assumptions",
               "predictions", "label_curve", "copies_of_training", "seconds", "out", "created"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny networks gain nothing from a second intra-op thread, and on a busy 2-core
    machine two spinning threads made training 5-10x slower (measured); one thread keeps this
    module's time steady."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _slice(src, dst, per_class: int):
    for d in sorted(src.iterdir()):
        (dst / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:per_class]:
            shutil.copy(f, dst / d.name / f.name)
    return dst


@pytest.fixture(scope="module")
def animals(tmp_path_factory):
    """Real animal-mnist: 100 training images per class, a 12-per-class slice of them, and a
    50-per-class slice of the held-out test folder."""
    pytest.importorskip("animal_mnist", reason="pip install --no-deps animal-mnist==0.4")
    from headstart.data.shipped import write_animal_mnist
    base = tmp_path_factory.mktemp("animals")
    root = write_animal_mnist(base / "am", per_class=100)
    return {"train100": root / "train", "train12": _slice(root / "train", base / "train12", 12),
            "test": _slice(root / "test", base / "test50", 50),
            "test20": _slice(root / "test", base / "test20", 20)}


@pytest.fixture(scope="module")
def tiny_report(animals, tmp_path_factory):
    """One CLI compare with a label curve; (exit status, stdout, out dir, report.json)."""
    from headstart.cli.main import main
    import contextlib
    import io
    out = tmp_path_factory.mktemp("cmp") / "report"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["compare", str(animals["train12"]), "--test", str(animals["test"]), "--out",
                   str(out), "--epochs", "2", "--label-curve", "1,2,all", *TINY])
    return rc, buf.getvalue(), out, json.loads((out / "report.json").read_text())


def test_cli_writes_a_complete_report(tiny_report, animals):
    rc, _, out, rep = tiny_report
    assert rc == 0
    assert REPORT_KEYS <= set(rep), REPORT_KEYS - set(rep)
    assert rep["copies_of_training"]["count"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    assert leftovers(out.parent) == ["report"]  # no partial or temporary sibling
    n = rep["test"]["n"]
    assert n == 500 and rep["predictions"]["y"] and len(rep["predictions"]["sources"]) == n
    assert rep["budget"]["image_size"] == 32 and rep["budget"]["epochs"] == 2
    from headstart.training.config import TrainConfig
    for arm, strategy in (("probe", "linear_probe"), ("transfer", TrainConfig().strategy),
                          ("scratch", "scratch"), ("classic", "classic")):
        a = rep["arms"][arm]
        assert a["strategy"] == strategy and len(rep["predictions"][arm][0]) == n
        assert a["ci"][0] <= a["accuracy"] <= a["ci"][1]
        assert np.asarray(a["confusion"]).sum() == n
        h = a["history"][0]  # preparation time is counted in the first epoch
        assert h["seconds"] >= h["prepare_seconds"] >= 0
        assert a["train_examples"] == 100 and a["val_examples"] == 20  # the same split
    assert {rep["arms"][a]["backbone"] for a in ("probe", "transfer", "scratch")} == {
        rep["backbone"]}  # the input measured once, for every arm
    c = {a: rep["arms"][a]["compute"]["flops"] for a in ("probe", "transfer", "scratch")}
    assert 0 < c["probe"] < c["transfer"] and c["scratch"] > 0
    m = rep["arms"]["classic"]["model"]
    assert m["folds"] == 5 and m["cv_accuracy"] == max(r["cv_accuracy"] for r in m["measured"])
    assert m["description"].startswith("logistic regression on ")
    assert [d["reference"] for d in rep["class_drops"]] == ["classic", "scratch", "probe"]
    assert rep["verdict"]["baseline"] in ("classic", "scratch")
    assert rep["zero_shot"]["accuracy"] is None  # tiny_cnn has no named source labels
    assert rep["zero_shot"]["note"].startswith("Not computed")
    lc = rep["label_curve"]
    assert lc["labels"] == ["1", "2", "all"] and lc["shots"] == [1, 2, 12]
    assert len(lc["transfer"]) == len(lc["scratch"]) == len(lc["classic"]) == 3
    assert lc["reference"] == rep["verdict"]["baseline"] and lc["factor"] >= 1
    assert set(lc["by_arm"]) == {"scratch", "classic"}


def test_summary_matches_the_json(tiny_report):
    _, stdout, out, rep = tiny_report
    lines = stdout.strip().splitlines()
    v = rep["verdict"]
    assert lines[0] == f"verdict: {v['label']}. {v['reason']}"
    assert lines[1] == f"  {v['advice']}" and v["advice"].startswith(f"Use {v['use_name']}")
    body = "\n".join(lines)
    for arm in ("probe", "transfer", "scratch", "classic"):
        a = rep["arms"][arm]
        assert f"{a['accuracy']:.1%} (95% CI {a['ci'][0]:.1%} to {a['ci'][1]:.1%})" in body
    d = v["difference"]
    assert f"{v['recipe']} - {v['baseline']} {100 * d['diff']:+.1f} points (95% CI " \
           f"{100 * d['lo']:+.1f}" in body
    assert f"{rep['target']['accuracy']:.1%} validation accuracy" in body
    assert rep["speedup"]["text"] in body and rep["speedup_classic"]["text"] in body
    assert f"label efficiency: {rep['label_curve']['text']}" in body
    assert lines[-1] == f"report: {out / 'report.html'}"
    check_sentence_numbers(rep)  # and every number in those sentences is a figure
    assert [ln[:2] for ln in lines if ln[:1].isdigit()] == ["1.", "2.", "3."]
    assert rep["backbone"].startswith("tiny_cnn")  # or a cut of it, measured once for all arms
    assert f"1. transferred knowledge alone ({rep['backbone']} at 32 px): frozen probe" in body


def test_page_shows_what_the_json_says(tiny_report, tmp_path):
    _, _, out, rep = tiny_report
    text = (out / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    keys = check_figures(page, rep)
    assert {"verdict.label", "arms.probe.accuracy", "label_curve.factor", "time_note",
            "class_drops.1.min_drop", "test.n", "speedup.text"} <= keys
    assert len(page.imgs) == 4  # curves, accuracies, label curve, confusion matrices
    assert untagged_numbers(text) == []
    browser = _chromium()
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'p'}",
                           "--virtual-time-budget=5000", "--dump-dom",
                           (out / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=60)
    rendered = parse(done.stdout)
    assert rendered.body.get("data-images-loaded") == "4", done.stderr[-500:]
    check_figures(rendered, rep)
    assert untagged_numbers(done.stdout) == []


def test_negative_case_random_weights_presented_as_pretrained(animals, tmp_path, cli):
    """tiny_cnn's "pre-trained" weights are a fixed random init: no knowledge to transfer.
    With a budget in which scratch learns (1,000 images, 15 epochs, 16 px), transfer does not
    beat it: the verdict is negative (or at least no gain), never positive, and the exit
    status follows --fail-on-negative. Measured with seeds 0-3: transfer 57-63%, scratch
    67-72%, transfer - scratch -5 to -15 points, every 95% interval below zero."""
    r = cli("compare", animals["train100"], "--test", animals["test"], "--out",
            tmp_path / "neg", "--epochs", "15", "--patience", "20", "--fail-on-negative",
            *TINY, "--image-size", "16")
    rep = json.loads((tmp_path / "neg" / "report.json").read_text())
    label = rep["verdict"]["label"]
    assert label in ("negative", "none (within noise)"), (label, rep["verdict"]["reason"])
    assert r.rc == (3 if label == "negative" else 0), r
    assert r.out.startswith(f"verdict: {label}.")


def _banner(out) -> str:
    text = (out / "report.html").read_text(encoding="utf-8")
    return re.search(r'<section class="banner" data-banner="(\w+)"', text).group(1)


def test_the_classic_model_wins_at_a_tiny_input_size(animals, tmp_path, cli):
    """Real EfficientNet-Lite0 at 16 px, the whole network (`--cut none`), where its ImageNet
    features carry little (measured on the 50-per-class test slice: probe 30.8%), against a
    logistic regression on the same silhouettes (65.8%, HOG; with `--cut auto` compare picks
    the stage4 cut instead, 75.6%, and transfer wins by +9.8 points): the
    verdict says so, recommends the classic model, the banner is red, and the advice names the
    input size. Scratch (one epoch) stays at chance and is said not to count."""
    r = cli("compare", animals["train12"], "--test", animals["test20"], "--out", tmp_path / "o",
            "--image-size", "16", "--cut", "none", "--epochs", "1", "--strategy", "linear_probe",
            "--quiet", "--fail-on-negative")
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    v, a = rep["verdict"], rep["arms"]
    assert (v["label"], v["use"], v["baseline"]) == ("negative", "classic", "classic"), v
    assert r.rc == 3 and r.out.startswith("verdict: negative. Negative transfer: the frozen probe")
    assert a["classic"]["accuracy"] > a["probe"]["accuracy"] + 0.2
    assert "a larger --image-size (this run used 16 px; the backbone was pre-trained at 224 px)" \
        in v["advice"] and "  Use the classic model; to make transfer pay" in r.out
    assert not v["scratch_learned"] and "did not learn within the budget (1 epoch)" in r.out
    assert _banner(tmp_path / "o") == "bad"
    check_sentence_numbers(rep)


def test_transfer_wins_at_112px_and_says_by_how_much(animals, tmp_path, cli):
    """The same data at 112 px: the frozen Lite0 features beat the classic model (measured on
    the 50-per-class slice: 81.4% against 65.8%, +15.6 points, 95% CI +11.2 to +19.6; here
    on 20 per class): positive, a green banner, the
    margin over the classic model in the first line, and speed sentences with no factor
    below one and no bare lower bound."""
    r = cli("compare", animals["train12"], "--test", animals["test20"], "--out", tmp_path / "o",
            "--image-size", "112", "--epochs", "1", "--strategy", "linear_probe", "--quiet")
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    v = rep["verdict"]
    assert r.rc == 0 and (v["label"], v["use"], v["baseline"]) == ("positive", "probe",
                                                                   "classic"), v
    d = rep["differences"]["probe-classic"]
    assert d["lo"] > 0.05 and v["difference"] == d
    assert r.out.startswith(f"verdict: positive. Transfer is worth it: the frozen probe "
                            f"(linear_probe), {rep['arms']['probe']['accuracy']:.1%}, beats the "
                            "best model without it (the classic model, "
                            f"{rep['arms']['classic']['accuracy']:.1%}) by "
                            f"{100 * d['diff']:+.1f} points")
    assert _banner(tmp_path / "o") == "good"
    assert "[1/4]" not in r.err and "%|" not in r.err  # --quiet: the summary only
    for key in ("speedup", "speedup_classic"):
        text = rep[key]["text"]
        assert "> " not in text and not re.search(r"\b0\.\d+×", text), text
        for f in re.findall(r"(\d+(?:\.\d+)?)×", text):
            assert float(f) >= 1, text
    check_sentence_numbers(rep)


@pytest.mark.parametrize("label,flag,rc", [("negative", True, 3), ("negative", False, 0),
                                           ("positive", True, 0),
                                           ("none (within noise)", True, 0)])
def test_fail_on_negative_exit_status(tiny_report, monkeypatch, cli, tmp_path, label, flag, rc):
    import headstart.compare
    fake = {**tiny_report[3], "verdict": {**tiny_report[3]["verdict"], "label": label}}
    monkeypatch.setattr(headstart.compare, "compare", lambda *a, **k: fake)
    r = cli("compare", tmp_path, "--out", tmp_path / "x", *(["--fail-on-negative"] * flag))
    assert r.rc == rc and r.out.startswith(f"verdict: {label}.")


def test_help_documents_the_exit_status(cli, capsys):
    with pytest.raises(SystemExit):
        cli("compare", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--fail-on-negative" in text and "exit with status 3" in text


def test_text_compare_with_tiny_text(tmp_path, cli):
    from headstart.data.shipped import write_bbc_news
    root = write_bbc_news(tmp_path / "bbc", per_class=6)
    r = cli("compare", root / "train", "--out", tmp_path / "rep", "--backbone", "tiny_text",
            "--test-fraction", "0.34", "--epochs", "1", "--truncate", "--quiet")
    assert r.rc == 0, r
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["modality"] == "text" and rep["test"]["n"] == 10 and rep["budget"]["window"] == 64
    assert rep["classes"] == ["business", "entertainment", "politics", "sports", "tech"]
    z = rep["zero_shot"]
    assert "cosine" in z["method"] and z["classes_mapped"] == 5 and z["accuracy"] is not None
    assert (tmp_path / "rep" / "report.html").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--label-curve", "1,x"], "'x' is not a number"),
    (["--label-curve", "5,2"], "increasing"),
    (["--label-curve", "1,50"], "class 'bear' has only 9"),  # 12 less the test quarter
    (["--target", "1.5"], "target 1.5"),
    (["--target", "0"], "target 0.0"),
    (["--test-fraction", "1"], "test_fraction 1.0"),
    (["--seeds", "0"], "seeds must be"),
    (["--epochs", "0"], "epochs must be"),
    (["--val-fraction", "0"], "val_fraction 0.0"),
    (["--test", "TEST", "--test-fraction", "0.2"], "--test-fraction has no effect"),
    (["--test", "ELSEWHERE"], "not among the training classes"),
    (["--backbone", "tiny_txt"], "Did you mean 'tiny_text'"),
])
def test_bad_flags_give_one_line_errors(animals, tmp_path, cli, args, needle):
    other = tmp_path / "other" / "whale"
    other.mkdir(parents=True)
    shutil.copy(next((animals["test"] / "cat").iterdir()), other / "1.png")
    args = [{"TEST": animals["test"], "ELSEWHERE": other.parent}.get(a, a) for a in args]
    line = cli("compare", animals["train12"], "--out", tmp_path / "o", *TINY,
               *args).one_line_error()  # a later --backbone wins
    assert needle in line, line
    assert leftovers(tmp_path) == ["other"]


def test_existing_out_is_refused_before_any_training(animals, tmp_path, cli, monkeypatch):
    import headstart.api
    monkeypatch.setattr(headstart.api, "train", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "o").mkdir()
    line = cli("compare", animals["train12"], "--out", tmp_path / "o", *TINY).one_line_error()
    assert "already exists" in line and "--overwrite" in line


def test_interrupted_compare_leaves_no_out(animals, tmp_path, cli, monkeypatch, capsys):
    import headstart.api
    real, calls = headstart.api.train, []

    def train(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(headstart.api, "train", train)
    r = cli("compare", animals["train12"], "--test", animals["test"], "--out",
            tmp_path / "o", "--epochs", "1", *TINY)
    assert r.rc == 130 and "nothing was written" in r.err
    assert leftovers(tmp_path) == []


def test_each_arm_trains_with_no_earlier_arms_model_held(animals, tmp_path, cli, monkeypatch):
    """An arm's trained model is freed before the next arm trains: on all 1,427 BBC articles
    the transfer arm's model, still held, put the scratch arm's peak 0.25 GB higher."""
    import gc
    import weakref
    import headstart.api
    real, models, alive = headstart.api.train, [], []

    def train(*a, **k):
        gc.collect()
        alive.append(sum(m() is not None for m in models))
        trained = real(*a, **k)
        models.append(weakref.ref(trained.model))
        return trained
    monkeypatch.setattr(headstart.api, "train", train)
    r = cli("compare", animals["train12"], "--test", animals["test20"], "--out", tmp_path / "o",
            "--epochs", "1", *TINY)
    assert r.rc == 0, r
    assert alive == [0, 0, 0]  # probe, transfer, scratch: none starts with another's model


def test_compare_says_which_arm_and_seed_it_is_on(animals, tmp_path, cli):
    """Each arm of each seed is announced on stderr as it starts, in the order it runs, with
    the training's own progress bars between; stdout keeps the summary only."""
    r = cli("compare", animals["train12"], "--test", animals["test20"], "--out", tmp_path / "o",
            "--epochs", "1", "--seeds", "2", *[a for a in TINY if a != "--quiet"])
    assert r.rc == 0 and r.out.startswith("verdict: ")
    starts = [line.split(":")[0] for line in r.err_lines if re.match(r"\[\d/8\] ", line)]
    assert starts == [f"[{i + 1 + 4 * s}/8] {arm}, seed {s + 1} of 2" for s in range(2)
                      for i, arm in enumerate(("classic", "probe", "transfer", "scratch"))]
    err = r.err.replace("\r", "\n")
    transfer = err[err.index("[3/8] transfer"):err.index("[4/8] scratch")]
    assert "%|" in transfer and "[transfer seed 1] phase" in transfer  # its bars, its lines
    assert "seed 1 of 2" not in r.out


def test_test_images_copied_from_the_training_data_are_said(animals, tmp_path, cli):
    """A test folder holding a copy of a training image (another name): compare warns before
    training that every arm scores it from memory and records the count; none otherwise
    (tiny_report: count 0)."""
    test = tmp_path / "test"
    shutil.copytree(animals["test20"], test)
    first = sorted((animals["train12"] / "cat").iterdir())[0]
    shutil.copy(first, test / "cat" / "renamed.png")
    r = cli("compare", animals["train12"], "--test", test, "--out", tmp_path / "o",
            "--epochs", "1", *TINY)
    assert r.rc == 0, r
    n = sum(1 for _ in test.rglob("*.png"))
    said = f"warning: 1 of the {n} test images is an exact copy of one of the images the arms"
    assert said in r.out, r.out  # in the summary, which --quiet keeps
    seen = json.loads((tmp_path / "o" / "report.json").read_text())["copies_of_training"]
    assert seen["count"] == 1 and seen["of"] == n
    assert seen["examples"] == [str(test / "cat" / "renamed.png")]
    text = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert "copies_of_training.text" in check_figures(parse(text), json.loads(
        (tmp_path / "o" / "report.json").read_text()))
    assert untagged_numbers(text) == []


def test_a_crash_while_writing_leaves_no_out(animals, tmp_path, cli, monkeypatch):
    import headstart.compare
    real = headstart.compare.write_report

    def broken(report, out_dir):
        real(report, out_dir)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(headstart.compare, "write_report", broken)
    r = cli("compare", animals["train12"], "--test", animals["test"], "--out",
            tmp_path / "o", "--epochs", "1", *TINY)
    assert "No space left" in r.one_line_error()
    assert leftovers(tmp_path) == []


def test_python_api_without_out_writes_nothing(animals, tmp_path):
    from headstart.compare import compare
    from headstart.training.config import TrainConfig
    rep = compare(animals["train12"], None, test_fraction=0.25, seeds=2, progress=False,
                  log=None, config=TrainConfig(backbone="tiny_cnn", input_size=32, epochs=1))
    assert "out" not in rep and rep["test"]["n"] == 30 and rep["budget"]["seeds"] == 2
    for a in rep["arms"].values():
        assert len(a["seed_accuracies"]) == 2 and len(a["seed_time_to_target"]) == 2
        assert np.isclose(a["accuracy"], np.mean(a["seed_accuracies"]))
        assert np.asarray(a["confusion"]).sum() == 2 * 30
    assert "summed over 2 seeds" in rep["confusion_note"]


# -- the parts -------------------------------------------------------------------------------
def test_zero_shot_maps_imagenet_names_by_head_noun():
    from headstart.evaluation.zero_shot import imagenet_names, map_source_labels
    names = imagenet_names()
    mapping, unmapped = map_source_labels(["cat", "Elephants", "dog", "giraffe", "sheep"], names)
    shown = {c: {names[i] for i in idx} for c, idx in mapping.items()}
    assert shown["cat"] == {"tabby cat", "Persian cat", "Siamese cat"}
    assert shown["Elephants"] == {"Asian elephant", "African bush elephant"}
    assert "Maltese dog" in shown["dog"] and "dog sled" not in shown["dog"]
    assert "ram (adult male sheep)" in shown["sheep"]
    assert unmapped == ["giraffe"]


def test_zero_shot_accuracy_only_over_mapped_classes():
    import torch
    from headstart.evaluation.zero_shot import image_zero_shot

    class Source:  # a backbone whose source classifier is the identity on 4 "labels"
        config = type("C", (), {"source_labels": "imagenet-1k", "name": "fake"})()

        def source_classifier(self):
            return torch.nn.Identity()
    names = ["tabby cat", "Persian cat", "brown bear", "zebra"]
    feats = 10 * np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 2]][:, None, :]
    y = [0, 0, 1, 2, 0]  # classes cat, bear, cow; the last cat looks like a bear
    z = image_zero_shot(Source(), feats, y, ["cat", "bear", "cow"], source_names=names)
    assert z["unmapped"] == ["cow"] and z["classes_mapped"] == 2 and z["n"] == 4
    assert z["accuracy"] == pytest.approx(3 / 4) and z["predictions"] == [0, 0, 1, 1]
    assert "2 of 3 classes" in z["note"] and "chance 50.0%" in z["note"]


def test_label_curve_spec():
    from headstart.compare import parse_label_curve
    from headstart.data.datasets import ImageDataset
    from headstart.exceptions import ConfigError
    pool = ImageDataset(list(range(30)), ["a"] * 12 + ["b"] * 18)
    assert parse_label_curve("1, 2,ALL", pool) == [("1", 1), ("2", 2), ("all", None)]
    assert parse_label_curve([1, 12, "all"], pool)[-1] == ("all", None)  # 15 per class > 12
    balanced = ImageDataset(list(range(24)), ["a"] * 12 + ["b"] * 12)
    assert parse_label_curve("1,12,all", balanced) == [("1", 1), ("12", 12)]
    for bad in ("1", "all,1", "2,2", "0,1", "1,,2", "13,all"):
        with pytest.raises(ConfigError):
            parse_label_curve(bad, pool)


def test_default_target_is_the_best_without_transfer_unless_that_is_chance():
    from headstart.compare_report import _default_target

    def runs(scratch_best, classic=0.3, transfer_best=0.9, n_val=20):
        hist = lambda best: [{"val_acc": best / 2}, {"val_acc": best}]  # noqa: E731
        return {"probe": [{"history": hist(0.8)}], "transfer": [{"history": hist(transfer_best)}],
                "classic": [{"history": [{"val_acc": classic}]}],
                "scratch": [{"history": hist(scratch_best), "metrics": {"val_examples": n_val}}]}
    target, info = _default_target(runs(0.6), 10)
    assert target == pytest.approx(0.57) and info["rule"].startswith("95% of scratch's best")
    target, info = _default_target(runs(0.2, classic=0.7), 10)
    assert target == pytest.approx(0.665) and info["reference"] == "classic"
    assert info["rule"].startswith("95% of the classic model's validation accuracy (70.0%")
    target, info = _default_target(runs(0.2, classic=0.15), 10)  # chance 10% + 2 x 6.7%
    assert target == pytest.approx(0.855) and "within noise of chance (10.0%)" in info["rule"]
