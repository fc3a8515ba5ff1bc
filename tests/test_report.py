"""report.json and report.html of `headstart compare`, checked as files and, in headless
Chromium, as a rendered page (skipped without Chromium unless HEADSTART_REQUIRE_BROWSER=1)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from headstart.evaluation import indicators as ind
from headstart.evaluation import verdict as vd
from headstart.evaluation.metrics import confusion_matrix
from headstart.evaluation.report import write_report
from headstart.exceptions import DataError

CLASSES = ["cat", "dog", "<b>fox</b> & co", "$5 bill", "owl"]


def _preds(y, acc, rng, k):
    wrong = rng.random(len(y)) > acc
    return np.where(wrong, (y + rng.integers(1, k, len(y))) % k, y)


def _history(rng, epochs, start, end, sec):
    accs = start + (end - start) * (1 - np.exp(-np.arange(1, epochs + 1) / (epochs / 3)))
    return [{"phase": "train", "epoch": e + 1, "seconds": round(sec * rng.uniform(0.9, 1.1), 2),
             "val_acc": float(np.clip(a + rng.normal(0, 0.01), 0, 1)), "train_loss": 1.0 / (e + 1)}
            for e, a in enumerate(accs)]


def _arm(y, pred, history, target, seeds, *, strategy, k) -> dict:
    acc, lo, hi = ind.accuracy_ci(y, pred, seed_accs=seeds)
    out = {"strategy": strategy, "accuracy": acc, "ci": [lo, hi],
           "seed_accuracies": seeds or [], "history": history,
           "val_accuracy": max(r["val_acc"] for r in history),
           "time_to_target": ind.time_to_target(history, target),
           "confusion": confusion_matrix(y, pred, k)}
    if strategy == "classic":
        out["model"] = {"description": "logistic regression on grey pixels at 16x16, C=0.1",
                        "chosen_by": "5-fold cross-validation on the training part",
                        "setting": {"size": 16}, "C": 0.1, "folds": 5,
                        "measured": [{"features": "grey pixels at 16x16", "size": 16, "C": C,
                                      "cv_accuracy": a} for C, a in ((0.01, 0.55), (0.1, 0.6))]}
        return out
    backprop = 0 if strategy == "linear_probe" else 900 * len(history)
    out["compute"] = ind.compute_estimate(flops_per_input=0.8e9, forward_inputs=1200,
                                          backward_inputs=backprop,
                                          seconds=sum(r["seconds"] for r in history))
    return out


def build_report(*, seed: int = 0, with_optional: bool = True) -> dict:
    """A realistic report from indicators on synthetic predictions: transfer clearly better
    than the classic model, which beats scratch."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    y = rng.integers(0, k, 300)
    preds = {"probe": _preds(y, 0.78, rng, k), "transfer": _preds(y, 0.86, rng, k),
             "scratch": _preds(y, 0.62, rng, k), "classic": _preds(y, 0.66, rng, k)}
    owl = y == 4
    preds["transfer"][owl] = _preds(y[owl], 0.4, rng, k)  # one class transfers badly
    hist = {"probe": _history(rng, 1, 0.77, 0.77, 4.0),
            "transfer": [{"phase": "head", "epoch": 1, "seconds": 4.0, "val_acc": 0.77}]
            + _history(rng, 6, 0.78, 0.87, 30.0),
            "scratch": _history(rng, 12, 0.25, 0.64, 25.0),
            "classic": [{"phase": "classic", "epoch": 1, "seconds": 1.5, "val_acc": 0.67}]}
    target = ind.default_target(0.67)
    seeds = {"transfer": [0.86, 0.85, 0.875], "scratch": [0.62, 0.60, 0.64]}
    arms = {a: _arm(y, preds[a], hist[a], target, seeds.get(a), strategy=s, k=k)
            for a, s in (("probe", "linear_probe"), ("transfer", "fine_tune"),
                         ("scratch", "scratch"), ("classic", "classic"))}
    accs = {a: seeds.get(a) for a in arms}
    diffs = {f"{a}-{b}": ind.paired_difference(y, preds[a], preds[b], seed_accs_a=accs[a],
                                               seed_accs_b=accs[b])
             for a in ("transfer", "probe") for b in ("probe", "scratch", "classic") if a != b}
    setting = {"strategy": "fine_tune", "epochs": 6, "modality": "image", "image_size": 224,
               "native_size": 224}
    report = {"title": "Transfer vs the best model without it: pets", "data": "data/pets/",
              "backbone": "efficientnet_lite0", "modality": "image", "classes": CLASSES,
              "target": {"accuracy": target, "reference_val_accuracy": 0.67, "fraction": 0.95,
                         "rule": "95% of the classic model's validation accuracy (67.0%)"},
              "verdict": vd.decide(arms, diffs, chance=vd.chance_level(y.tolist()), n_test=300,
                                   setting=setting), "arms": arms,
              "difference": diffs["transfer-scratch"],
              "probe_difference": diffs["transfer-probe"],
              "classic_difference": diffs["transfer-classic"],
              "speedup": vd.speedup(arms["transfer"]["time_to_target"],
                                    arms["scratch"]["time_to_target"]),
              "speedup_classic": vd.speedup(arms["transfer"]["time_to_target"],
                                            arms["classic"]["time_to_target"],
                                            other="the classic model", units=("seconds",)),
              "class_drops": {"reference": "probe", "min_drop": 0.05, "rows": ind.per_class_drops(
                  y, preds["transfer"], preds["probe"], CLASSES, min_drop=0.05)},
              "compute_assumptions": arms["transfer"]["compute"]["assumptions"]}
    if with_optional:
        shots = [1, 2, 5, 10, 20]
        tr, sc = [0.55, 0.66, 0.76, 0.82, 0.86], [0.22, 0.28, 0.38, 0.50, 0.62]
        cl = [0.35, 0.45, 0.55, 0.60, 0.66]
        by_arm = {"scratch": ind.label_efficiency(shots, tr, sc),
                  "classic": ind.label_efficiency(shots, tr, cl, name="the classic model")}
        report["label_curve"] = {"shots": shots, "transfer": tr, "scratch": sc, "classic": cl,
                                 "reference": "classic", **by_arm["classic"], "by_arm": by_arm}
        report["zero_shot"] = {"accuracy": 0.41, "note": "ImageNet labels mapped by WordNet"}
    return report


class _Figures(HTMLParser):
    """Collects data-key elements (attributes and text), <img> sources and <body> attributes."""

    def __init__(self):
        super().__init__()
        self.figures, self.imgs, self.body, self._open = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "body":
            self.body = a
        if tag == "span":
            self._open.append(a if "data-key" in a else None)

    def handle_endtag(self, tag):
        if tag == "span" and self._open:
            a = self._open.pop()
            if a is not None:
                self.figures.append(a)

    def handle_data(self, data):
        for a in self._open:
            if a is not None:
                a["text"] = a.get("text", "") + data


def parse(text: str) -> _Figures:
    p = _Figures()
    p.feed(text)
    return p


def lookup(obj, key: str):
    for part in key.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def check_figures(page: _Figures, data: dict) -> set[str]:
    """Every tagged figure carries report.json's value, and shows it (rounded as printed)."""
    assert page.figures
    for f in page.figures:
        want = lookup(data, f["data-key"])
        assert json.loads(f["data-value"]) == want, f["data-key"]
        text = f.get("text", "")
        if isinstance(want, str):
            assert text == want, f["data-key"]
        elif want is None:
            assert text in ("not reached", "n/a"), f["data-key"]
        else:
            m = re.search(r"[-+]?\d+(?:\.(\d+))?(?:e([-+]?\d+))?", text)
            shown = float(m.group(0))
            scale = 100 if f["data-fmt"] in ("pct", "pts") else 1
            digits = len(m.group(1) or "") - int(m.group(2) or 0)
            tol = 0.5 * 10.0 ** -digits + 1e-9 * abs(shown)
            if f["data-fmt"] == "sci":
                tol = 0.005 * abs(shown) + 1e-300  # 3 significant digits
            assert abs(shown - scale * want) <= tol, (f["data-key"], text, want)
    return {f["data-key"] for f in page.figures}


# -- numbers inside sentences ---------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.(\d+))?")
_LEVEL = re.compile(r"95% (CI|interval)")  # the interval level, stated in words
# strings that are not results: paths and names, and the stated assumptions of the estimate
NOT_RESULTS = ("title", "data", "backbone", "created", "out", "test.source", "time_note",
               "compute_assumptions", "predictions", "classes")


def numbers_in(text: str) -> list[tuple[float, int]]:
    """(value, decimals) of every number written in `text`, the "95% CI" level left out."""
    return [(float(m.group(0)), len(m.group(1) or "")) for m in
            _NUMBER.finditer(_LEVEL.sub("", text.replace("−", "-")))]


def figures_under(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    items = obj.values() if isinstance(obj, dict) else obj
    return [v for x in items for v in figures_under(x)]


def check_sentence_numbers(data: dict) -> int:
    """Every number written in a sentence of the report is a figure stored next to it: in the
    dict that holds the sentence (nested values included), as a share (x 100 for percent and
    points) or as is, at the rounding shown. Top-level sentences may cite any figure.
    Returns how many numbers were checked."""
    checked, wrong = 0, []

    def visit(obj, path: str, scope):
        if path in NOT_RESULTS or any(path.startswith(p + ".") for p in NOT_RESULTS) or \
                ".history." in f".{path}." or path.endswith("compute.assumptions"):
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, f"{path}.{k}" if path else k, obj)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                visit(v, f"{path}.{i}", scope)
        elif isinstance(obj, str):
            nonlocal checked
            near = figures_under({k: v for k, v in scope.items() if k != "predictions"})
            for value, digits in numbers_in(obj):
                checked += 1
                tol = 0.5 * 10.0 ** -digits + 1e-9
                if not any(abs(abs(value) - abs(f * s)) <= tol for f in near for s in (1, 100)):
                    wrong.append((path, value, obj))
    visit(data, "", data)
    assert not wrong, wrong
    return checked


class _Prose(HTMLParser):
    """The page's visible text outside tagged figures, section badges, scripts and styles."""

    def __init__(self):
        super().__init__()
        self.text, self._skip = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        skip = tag in ("script", "style", "title") or "data-key" in a or a.get("class") == "num"
        if tag in ("span", "script", "style", "title") or self._skip:
            self._skip.append(skip or bool(self._skip and self._skip[-1]))

    def handle_endtag(self, tag):
        if tag in ("span", "script", "style", "title") and self._skip:
            self._skip.pop()

    def handle_data(self, data):
        if not (self._skip and self._skip[-1]):
            self.text.append(data)


def untagged_numbers(page_html: str) -> list[str]:
    """Numbers the page writes outside its tagged figures: none is allowed but the level of
    the intervals ("95% CI"), so every figure a reader sees can be traced to report.json."""
    p = _Prose()
    p.feed(page_html)
    return [f"{v:g}" for v, _ in numbers_in(" ".join(p.text))]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    html_path, json_path = write_report(build_report(), out)
    return html_path, json.loads(json_path.read_text(encoding="utf-8"))


def test_files_are_written_and_self_contained(written):
    html_path, data = written
    assert html_path.name == "report.html" and html_path.with_name("report.json").exists()
    assert not [p for p in html_path.parent.iterdir() if p.name.startswith(".")]  # no temp files
    text = html_path.read_text(encoding="utf-8")
    page = parse(text)
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    rest = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', "", text)
    assert not re.search(r"https?:|//[a-z]|@import|url\(|\b(src|href)=", rest, re.I)
    assert data["arms"]["transfer"]["confusion"][0] and data["created"]


def test_page_figures_match_the_json(written):
    html_path, data = written
    keys = check_figures(parse(html_path.read_text(encoding="utf-8")), data)
    for key in ("verdict.label", "verdict.reason", "verdict.forgetting_reason",
                "arms.transfer.accuracy", "arms.scratch.ci.1", "arms.probe.accuracy",
                "zero_shot.accuracy", "difference.diff", "difference.lo", "difference.hi",
                "target.accuracy", "arms.transfer.time_to_target.epochs",
                "arms.scratch.time_to_target.seconds", "speedup.text", "speedup_classic.text",
                "verdict.headline", "verdict.baseline_reason", "verdict.scratch_reason",
                "arms.classic.accuracy", "arms.classic.model.description",
                "arms.classic.model.measured.1.cv_accuracy", "classic_difference.lo",
                "verdict.difference.diff", "arms.probe.val_accuracy", "label_curve.factor",
                "label_curve.classic.2", "label_curve.by_arm.scratch.text", "label_curve.text",
                "arms.transfer.compute.flops",
                "arms.scratch.compute.co2_g", "compute_assumptions",
                "class_drops.rows.0.drop", "arms.transfer.seed_accuracies.2"):
        assert key in keys, key
    assert data["verdict"]["label"] == "positive"


def test_every_number_in_a_sentence_is_a_figure_next_to_it(written):
    _, data = written
    assert check_sentence_numbers(data) > 30
    v = data["verdict"]
    assert v["label"] == "positive" and v["baseline"] == "classic" and v["use"] == "transfer"
    assert f"{100 * v['difference']['diff']:+.1f} points" in v["reason"]
    bad = json.loads(json.dumps(data))
    bad["verdict"]["reason"] = bad["verdict"]["reason"].replace(
        f"{100 * v['difference']['diff']:+.1f}", f"{100 * v['difference']['diff'] + 2.5:+.1f}")
    with pytest.raises(AssertionError, match="verdict.reason"):
        check_sentence_numbers(bad)  # the check can fail: a number that is not the figure


def test_no_number_on_the_page_is_untagged(written):
    html_path, _ = written
    text = html_path.read_text(encoding="utf-8")
    assert untagged_numbers(text) == []
    assert untagged_numbers(text.replace("<footer", "<p>17 images</p><footer")) == ["17"]


def test_user_strings_are_escaped(tmp_path):
    report = build_report(with_optional=False)
    report["title"] = "Pets <script>alert(1)</script>"
    report["class_drops"]["rows"] = [{"class": CLASSES[2], "transfer_acc": 0.5,
                                      "reference_acc": 0.75, "drop": 0.25, "n": 12}]
    text = write_report(report, tmp_path)[0].read_text(encoding="utf-8")
    assert "<b>fox</b>" not in text and "<script>alert" not in text
    assert "&lt;b&gt;fox&lt;/b&gt; &amp; co" in text and "&lt;script&gt;alert(1)" in text


def test_absent_sections_are_left_out(tmp_path):
    report = build_report(with_optional=False)
    del report["arms"]["probe"], report["probe_difference"], report["class_drops"]
    report["verdict"] = {"label": "positive", "reason": "Transfer beats scratch."}  # the minimum
    report["arms"]["scratch"]["history"][0]["val_acc"] = float("nan")
    html_path, json_path = write_report(report, tmp_path / "deeper" / "out")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["arms"]["scratch"]["history"][0]["val_acc"] is None
    text = html_path.read_text(encoding="utf-8")
    keys = check_figures(parse(text), data)
    assert not [k for k in keys if k.startswith(("zero_shot", "label_curve", "arms.probe",
                                                 "class_drops", "verdict.forgetting"))]
    assert "Label efficiency" not in text and "Per-class drops" not in text
    assert len(parse(text).imgs) == 3


@pytest.mark.parametrize("broken", [{}, {"title": "t", "verdict": {"label": "positive"},
                                         "arms": {"transfer": {"accuracy": 0.5}}},
                                    {"title": "t", "verdict": {"label": "x", "reason": "y"},
                                     "arms": {"transfer": {}}},
                                    {"title": object()}])
def test_malformed_reports_raise_data_error(tmp_path, broken):
    with pytest.raises(DataError):
        write_report(broken, tmp_path)


def _chromium() -> str | None:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome"))), None)
    if found is None and os.environ.get("HEADSTART_REQUIRE_BROWSER") == "1":
        pytest.fail("HEADSTART_REQUIRE_BROWSER=1 but no chromium on PATH; "
                    "install it with `apt-get install -y chromium`.")
    if found is None:
        pytest.skip("no chromium on PATH (set HEADSTART_REQUIRE_BROWSER=1 to make this fail)")
    return found


def test_page_renders_in_headless_chromium(written, tmp_path):
    browser = _chromium()
    html_path, data = written
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    page = parse(done.stdout)
    assert page.body.get("data-images-total") == "4", done.stdout[-500:]
    assert page.body.get("data-images-loaded") == "4"
    check_figures(page, data)
    label = [f for f in page.figures if f["data-key"] == "verdict.label"]
    assert [f["text"] for f in label] == [data["verdict"]["label"]]
    reason = [f for f in page.figures if f["data-key"] == "verdict.reason"][0]
    assert reason["text"] == data["verdict"]["reason"]
    # numbers, not only keys: what the browser shows outside the tagged figures has none, and
    # every number inside a shown sentence is a figure of report.json stored next to it
    assert untagged_numbers(done.stdout) == []
    shown = {f["data-key"]: f.get("text", "") for f in page.figures}
    assert numbers_in(shown["verdict.reason"]) and numbers_in(shown["speedup.text"])
    check_sentence_numbers(data)


def test_negative_transfer_and_forgetting_are_loud(tmp_path):
    report = build_report(with_optional=False)
    report["verdict"] = vd.decide(*NEGATIVE, chance=0.2, n_test=300, setting={
        "strategy": "fine_tune", "epochs": 5, "modality": "image", "image_size": 112,
        "native_size": 224})
    text = write_report(report, tmp_path)[0].read_text(encoding="utf-8")
    banner = re.search(r'<section class="banner" data-banner="(\w+)" style="background:(#\w+)">',
                       text)
    assert banner and banner.groups() == ("bad", "#cf222e")
    assert '<p class="warn"><span data-key="verdict.forgetting_reason"' in text
    assert "Negative transfer" in text and "catastrophic forgetting" in text
    assert "Use the classic model" in text and "a larger --image-size" in text


def _arms(**accs):
    return {a: {"accuracy": v, "ci": [v - 0.04, v + 0.04], "val_accuracy": v,
                "seed_accuracies": [v]} for a, v in accs.items()}


def _diff(a, b):
    return {"diff": a - b, "lo": a - b - 0.04, "hi": a - b + 0.04}


def _diffs(arms):
    acc = {a: r["accuracy"] for a, r in arms.items()}
    return {f"{a}-{b}": _diff(acc[a], acc[b]) for a in ("transfer", "probe")
            for b in ("probe", "scratch", "classic") if a != b}


_neg = _arms(probe=0.6, transfer=0.5, scratch=0.21, classic=0.75)
NEGATIVE = (_neg, _diffs(_neg))
