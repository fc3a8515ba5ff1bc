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
    backprop = 0 if strategy == "linear_probe" else 900 * len(history)
    compute = ind.compute_estimate(flops_per_input=0.8e9, forward_inputs=1200,
                                   backward_inputs=backprop,
                                   seconds=sum(r["seconds"] for r in history))
    return {"strategy": strategy, "accuracy": acc, "ci": [lo, hi],
            "seed_accuracies": seeds or [], "history": history,
            "time_to_target": ind.time_to_target(history, target), "compute": compute,
            "confusion": confusion_matrix(y, pred, k)}


def build_report(*, seed: int = 0, with_optional: bool = True) -> dict:
    """A realistic report from indicators on synthetic predictions: transfer clearly better."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    y = rng.integers(0, k, 300)
    preds = {"probe": _preds(y, 0.78, rng, k), "transfer": _preds(y, 0.86, rng, k),
             "scratch": _preds(y, 0.62, rng, k)}
    owl = y == 4
    preds["transfer"][owl] = _preds(y[owl], 0.6, rng, k)  # one class transfers badly
    hist = {"probe": _history(rng, 1, 0.77, 0.77, 4.0),
            "transfer": [{"phase": "head", "epoch": 1, "seconds": 4.0, "val_acc": 0.77}]
            + _history(rng, 6, 0.78, 0.87, 30.0),
            "scratch": _history(rng, 12, 0.25, 0.64, 25.0)}
    target = ind.default_target(max(r["val_acc"] for r in hist["scratch"]))
    seeds = {"transfer": [0.86, 0.85, 0.875], "scratch": [0.62, 0.60, 0.64]}
    arms = {a: _arm(y, preds[a], hist[a], target, seeds.get(a), strategy=s, k=k)
            for a, s in (("probe", "linear_probe"), ("transfer", "fine_tune"),
                         ("scratch", "scratch"))}
    diff = ind.paired_difference(y, preds["transfer"], preds["scratch"],
                                 seed_accs_a=seeds["transfer"], seed_accs_b=seeds["scratch"])
    probe_diff = ind.paired_difference(y, preds["transfer"], preds["probe"])
    report = {"title": "Transfer vs scratch: pets", "data": "data/pets/",
              "backbone": "efficientnet_lite0", "modality": "image", "classes": CLASSES,
              "target": {"accuracy": target, "rule": "95% of scratch's best val accuracy"},
              "verdict": ind.verdict(diff, probe_vs_transfer_ci=probe_diff), "arms": arms,
              "difference": diff, "probe_difference": probe_diff,
              "speedup": ind.speedup(arms["transfer"]["time_to_target"],
                                     arms["scratch"]["time_to_target"]),
              "class_drops": {"reference": "probe", "min_drop": 0.05, "rows": ind.per_class_drops(
                  y, preds["transfer"], preds["probe"], CLASSES, min_drop=0.05)},
              "compute_assumptions": arms["transfer"]["compute"]["assumptions"]}
    if with_optional:
        shots = [1, 2, 5, 10, 20]
        tr, sc = [0.55, 0.66, 0.76, 0.82, 0.86], [0.22, 0.28, 0.38, 0.50, 0.62]
        report["label_curve"] = {"shots": shots, "transfer": tr, "scratch": sc,
                                 **ind.label_efficiency(shots, tr, sc)}
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
                "arms.scratch.time_to_target.seconds", "speedup.epochs", "speedup.seconds",
                "label_curve.factor", "label_curve.text", "arms.transfer.compute.flops",
                "arms.scratch.compute.co2_g", "compute_assumptions",
                "class_drops.rows.0.drop", "arms.transfer.seed_accuracies.2"):
        assert key in keys, key
    assert data["verdict"]["label"] == "positive"


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
    report["verdict"] = ind.verdict(report["difference"])
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


def test_negative_transfer_and_forgetting_are_loud(tmp_path):
    report = build_report(with_optional=False)
    report["difference"] = {"diff": -0.06, "lo": -0.1, "hi": -0.02}
    report["verdict"] = ind.verdict(report["difference"], probe_vs_transfer_ci={
        "diff": -0.04, "lo": -0.07, "hi": -0.01})
    text = write_report(report, tmp_path)[0].read_text(encoding="utf-8")
    banner = re.search(r'<section class="banner" style="background:(#\w+)">', text)
    assert banner and banner.group(1) == "#cf222e"
    assert '<p class="warn"><span data-key="verdict.forgetting_reason"' in text
    assert "Negative transfer" in text and "catastrophic forgetting" in text
