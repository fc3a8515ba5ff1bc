"""`headstart compare`'s report: report.json (every figure) and report.html (one file).

The HTML page is self-contained (no external URL; plots are base64 PNGs drawn with matplotlib's
Agg backend). Every key figure on it sits in an element with `data-key` (its dotted path in
report.json, list items by index: "arms.transfer.ci.0"), `data-value` (the JSON value) and
`data-fmt`, so a test can check that the page says what the JSON says. An inline script
records, after load, how many <img> decoded in `<body data-images-loaded data-images-total>`.

The report dict (JSON-serialisable; NumPy numbers are converted, NaN/inf become null).
Required: "title", "verdict", "arms". Every other section is optional and simply left out of
the page when absent.

    title, data, backbone, modality, created    str ("created" is filled in when absent)
    classes        [str]                         class names, index = label
    test           {"source": str, "n": int, "chance": float}   what the arms were scored on
    budget         {"strategy", "epochs", "image_size", "seeds", ...}   shown in the header
    target         {"accuracy": float, "rule": str, ...}   e.g. "95% of the classic model's..."
    time_note      str                           how seconds were counted (under indicator 2)
    verdict        verdict.decide(): {"label", "reason", "headline", "use", "banner" (good,
                   caution, neutral, bad), "advice", "baseline_reason", "scratch_reason",
                   "forgetting", "forgetting_reason", "degenerate_reason", "difference", ...};
                   only "label" and "reason" are required
    arms           {"probe" | "transfer" | "classic" | "scratch": {
                      "strategy": str,            e.g. "linear_probe", "fine_tune", "classic"
                      "accuracy": float,          test accuracy (mean over seeds if several)
                      "ci": [lo, hi],             indicators.accuracy_ci
                      "val_accuracy": float,      validation accuracy (optional)
                      "seed_accuracies": [float], one per seed (optional)
                      "history": [{"epoch", "seconds", "val_acc", ...}],  training order
                      "time_to_target": indicators.time_to_target(),
                      "compute": indicators.compute_estimate(),   (neural arms)
                      "model": classic.ClassicModel.to_dict(),    (the classic arm)
                      "confusion": [[int]]}}      rows = true class, columns = predicted
    confusion_note str                           shown under the confusion matrices
    copies_of_training {"count", "of", "examples", "text"}   test examples that are copies of
                   training ones; "text" (the warning under the banner) only where count > 0
    zero_shot      {"accuracy": float | None, "note": str, "ci": [lo, hi], "mapping":
                    {class: [source label]}, "unmapped": [class]}   source labels -> classes
    difference     {"diff", "lo", "hi"}          transfer - scratch, indicators.paired_difference
    probe_difference {"diff", "lo", "hi"}        transfer - probe (the forgetting check)
    classic_difference {"diff", "lo", "hi"}      transfer - classic
    speedup, speedup_classic   verdict.speedup(): {"epochs", "seconds", "text", ...}
    class_drops    {"reference": arm name, "min_drop": float, "note": str (optional),
                    "rows": indicators.per_class_drops()}, or a list of such dicts
    label_curve    {"shots": [int], "transfer": [float], "scratch": [float], "classic":
                    [float] (optional), **indicators.label_efficiency()} ("factor", "text",
                    "lower_bound", ... against "reference"), optional "by_arm" {arm:
                    label_efficiency()}, "labels" (tick labels, e.g. "all") and "note"
    compute_assumptions  str                      shown under the compute table
    predictions    anything (per-example predictions): kept in report.json, not shown
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path

import numpy as np

from ..exceptions import DataError
from . import report_html as h

ARM_ORDER = h.ARM_ORDER


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    """Write report.json and report.html into out_dir (created if needed); returns their
    paths. Each file is written to a temporary sibling first, then renamed into place."""
    data = to_jsonable(report)
    _validate(data)
    data.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    _write(json_path, json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False))
    _write(html_path, render_html(data))
    return html_path, json_path


def render_html(data: dict) -> str:
    """The page for an already JSON-ready report dict (see `to_jsonable`)."""
    arms = _arms(data)
    parts = [h.header(data), h.banner(data["verdict"]), h.copies(data), h.indicator1(data, arms),
             h.indicator2(data, arms), h.indicator3(data, arms), h.label_section(data),
             h.confusion_section(data, arms), h.drops_section(data),
             h.compute_section(data, arms)]
    return _PAGE.format(title=h._e(data["title"]), css=_CSS,
                        body="\n".join(p for p in parts if p))


def to_jsonable(obj, path: str = "report"):
    """A copy of obj made of dict/list/str/int/float/bool/None (NaN and inf become None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_jsonable(v, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        return bool(obj) if isinstance(obj, np.bool_) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    raise DataError(f"{path} is a {type(obj).__name__}, which report.json cannot hold; use "
                    "numbers, strings, lists and dicts.")


# -- helpers ---------------------------------------------------------------------------------
def _arms(d: dict) -> list[str]:
    return sorted(d["arms"], key=lambda a: (ARM_ORDER + (a,)).index(a))


def _validate(d) -> None:
    missing = [k for k in ("title", "verdict", "arms") if not isinstance(d, dict) or not d.get(k)]
    missing += [f"verdict.{k}" for k in ("label", "reason") if not h.lookup(d, f"verdict.{k}", 0)]
    missing += [f"arms.{a}.accuracy" for a in (d.get("arms") or {}) if isinstance(d, dict)
                and h.lookup(d, f"arms.{a}.accuracy", None) is None]
    if missing:
        raise DataError(f"The report lacks {', '.join(dict.fromkeys(missing))}; see the "
                        "docstring of headstart.evaluation.report for the schema.")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1060px;margin:0 auto;padding:1em 1.5em;
color:#1f2328}h1{margin:.2em 0}h2{border-bottom:1px solid #d0d7de;margin-top:1.6em}
.key{font-weight:600}.meta,.note{color:#57606a}.note{font-size:.9em}
.banner{color:#fff;border-radius:10px;padding:1em 1.4em}.banner p{margin:.4em 0}
.banner .label{font-size:1.9em;font-weight:700}.cards{display:flex;flex-wrap:wrap;gap:1em}
.warn{background:#fff8c5;color:#7d4e00;padding:.5em .8em;border-radius:6px;font-weight:600}
.card{border:1px solid #d0d7de;border-radius:8px;padding:.8em 1.2em;min-width:180px;
max-width:420px}
.muted{opacity:.65}.big{font-size:1.8em;font-weight:700}img{max-width:100%}
table{border-collapse:collapse;margin:.6em 0}th{background:#f6f8fa}
td,th{border-bottom:1px solid #d0d7de;padding:.3em .8em;text-align:left}
.num{display:inline-block;background:#1f2328;color:#fff;border-radius:50%;width:1.4em;
text-align:center;margin-right:.5em}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.4em}"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
{body}
<footer class="note"><p>Every figure on this page is in report.json, next to this file.</p></footer>
<script>window.addEventListener("load", function () {{  // for tests: did every plot decode?
  var imgs = Array.prototype.slice.call(document.images), b = document.body;
  b.setAttribute("data-images-total", imgs.length);
  b.setAttribute("data-images-loaded", imgs.filter(i => i.complete && i.naturalWidth > 0).length);
}});</script>
</body></html>
"""
