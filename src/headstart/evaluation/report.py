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
    test           {"source": str, "n": int}     what the arms were scored on
    budget         {"strategy", "epochs", "image_size", "seeds", ...}   shown in the header
    target         {"accuracy": float, "rule": str}   e.g. "95% of scratch's best val accuracy"
    time_note      str                           how seconds were counted (under indicator 2)
    verdict        indicators.verdict(): {"label", "reason", "forgetting", "forgetting_reason"}
    arms           {"probe" | "transfer" | "scratch": {
                      "strategy": str,            e.g. "linear_probe", "fine_tune", "scratch"
                      "accuracy": float,          test accuracy (mean over seeds if several)
                      "ci": [lo, hi],             indicators.accuracy_ci
                      "seed_accuracies": [float], one per seed (optional)
                      "history": [{"epoch", "seconds", "val_acc", ...}],  training order
                      "time_to_target": indicators.time_to_target(),
                      "compute": indicators.compute_estimate(),
                      "confusion": [[int]]}}      rows = true class, columns = predicted
    confusion_note str                           shown under the confusion matrices
    zero_shot      {"accuracy": float | None, "note": str, "ci": [lo, hi], "mapping":
                    {class: [source label]}, "unmapped": [class]}   source labels -> classes
    difference     {"diff", "lo", "hi"}          transfer - scratch, indicators.paired_difference
    probe_difference {"diff", "lo", "hi"}        transfer - probe (the forgetting check)
    speedup        indicators.speedup(): {"epochs", "seconds", "lower_bound", "text"}
    class_drops    {"reference": arm name, "min_drop": float, "note": str (optional),
                    "rows": indicators.per_class_drops()}, or a list of such dicts
    label_curve    {"shots": [int], "transfer": [float], "scratch": [float],
                    **indicators.label_efficiency()}     ("factor", "text", "lower_bound", ...)
                   optional "labels" (tick labels, e.g. "all") and "note"
    compute_assumptions  str                      shown under the compute table
    predictions    anything (per-example predictions): kept in report.json, not shown
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from ..exceptions import DataError
from .plots import (ARM_NAMES, COLOURS, _pyplot, accuracy_figure, confusions_figure,
                    curves_figure, label_curve_figure)

ARM_ORDER = ("probe", "transfer", "scratch")
BANNER = {"positive": "#1a7f37", "negative": "#cf222e"}  # anything else: grey


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
    parts = [_header(data), _banner(data["verdict"]), _indicator1(data, arms),
             _indicator2(data, arms), _indicator3(data, arms), _label_section(data),
             _confusion_section(data, arms), _drops_section(data), _compute_section(data, arms)]
    return _PAGE.format(title=_e(data["title"]), css=_CSS, body="\n".join(p for p in parts if p))


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


# -- sections --------------------------------------------------------------------------------
def _header(d: dict) -> str:
    meta = [f"<b>{k}</b> {_v(k, d[k])}" for k in ("data", "backbone", "modality", "created")
            if d.get(k) is not None]
    if d.get("test"):
        meta.append(f'<b>test</b> {_v("test.source", d["test"].get("source", ""))} '
                    f'({_v("test.n", d["test"].get("n"), "int")} examples)')
    budget = d.get("budget") or {}
    meta += [f"<b>{_e(k.replace('_', ' '))}</b> {_v(f'budget.{k}', v)}"
             for k, v in budget.items() if isinstance(v, (str, int, float))]
    return (f'<header><h1>{_v("title", d["title"])}</h1>'
            f'<p class="meta">{" · ".join(meta)}</p></header>')


def _banner(v: dict) -> str:
    out = (f'<section class="banner" style="background:{BANNER.get(v["label"], "#57606a")}">'
           f'<div class="label">Transfer: {_v("verdict.label", v["label"])}</div>'
           f'<p>{_v("verdict.reason", v["reason"])}</p>')
    if v.get("forgetting_reason"):
        cls = "warn" if v.get("forgetting") else "ok"
        out += f'<p class="{cls}">{_v("verdict.forgetting_reason", v["forgetting_reason"])}</p>'
    return out + "</section>"


def _indicator1(d: dict, arms: list[str]) -> str:
    cards = []
    if "probe" in arms:
        p = d["arms"]["probe"]
        cards.append(_card(_v("arms.probe.accuracy", p["accuracy"], "pct"),
                           "frozen features + linear head" + _ci("arms.probe", p)))
    if d.get("zero_shot"):
        z = d["zero_shot"]
        cards.append(_card(_v("zero_shot.accuracy", z.get("accuracy"), "pct"), "zero-shot"
                           + _ci("zero_shot", z) + "<br><small>"
                           f'{_v("zero_shot.note", z.get("note") or "")}</small>'))
    if not cards:
        return ""
    extra = _zero_shot_mapping(d.get("zero_shot") or {})
    cards += [_card(_v(f"arms.{a}.accuracy", d["arms"][a]["accuracy"], "pct"),
                    f"{ARM_NAMES[a]}, for comparison", "muted")
              for a in ("scratch", "transfer") if a in arms]
    return _section("1", "Can the task be done with the transferred knowledge alone?",
                    f'<div class="cards">{"".join(cards)}</div>' + extra)


def _zero_shot_mapping(z: dict) -> str:
    mapping, unmapped = z.get("mapping") or {}, z.get("unmapped") or []
    if not mapping and not unmapped:
        return ""
    rows = [f"<li><b>{_e(c)}</b> ← {_e(', '.join(names))}</li>" for c, names in mapping.items()]
    rows += [f"<li><b>{_e(c)}</b> ← no source label (unmapped)</li>" for c in unmapped]
    return ('<details><summary>Zero-shot mapping of source labels to your classes</summary>'
            f'<ul class="note">{"".join(rows)}</ul></details>')


def _indicator2(d: dict, arms: list[str]) -> str:
    if not any(d["arms"][a].get("history") for a in arms):
        return ""
    body, t, s = "", d.get("target"), d.get("speedup")
    if t:
        body += (f'<p>Target: {_v("target.accuracy", t["accuracy"], "pct")} validation '
                 f'accuracy ({_v("target.rule", t.get("rule") or "")}).</p>')
    shown = [a for a in arms if "time_to_target" in d["arms"][a]]
    if shown:
        specs = (("epochs", "int"), ("seconds", "sec"), ("total_epochs", "int"),
                 ("total_seconds", "sec"))
        body += _table(["arm", "epochs to target", "seconds to target", "epochs run",
                        "seconds run"],
                       [[_arm(a)] + _cells(f"arms.{a}.time_to_target", specs, d) for a in shown])
    if s:
        more = "&gt; " if s.get("lower_bound") else ""
        body += '<div class="cards">' + "".join(
            _card(more + _v(f"speedup.{u}", s.get(u), "x"),
                  f"fewer {u} to reach the target with transfer") for u in ("epochs", "seconds"))
        body += f'</div><p class="note">{_v("speedup.text", s.get("text") or "")}</p>'
    if d.get("time_note"):
        body += f'<p class="note">{_v("time_note", d["time_note"])}</p>'
    body += _img(curves_figure(d, arms), "validation accuracy against epochs and seconds")
    return _section("2", "How long does the task take to learn, with transfer and without?", body)


def _indicator3(d: dict, arms: list[str]) -> str:
    rows = []
    for a in arms:
        r = d["arms"][a]
        seeds = ", ".join(_v(f"arms.{a}.seed_accuracies.{i}", s, "pct")
                          for i, s in enumerate(r.get("seed_accuracies") or []))
        rows.append([_arm(a), _v(f"arms.{a}.strategy", r.get("strategy") or ""),
                     _v(f"arms.{a}.accuracy", r["accuracy"], "pct"),
                     _ci(f"arms.{a}", r, bare=True), seeds or "1"])
    body = _table(["arm", "strategy", "test accuracy", "95% CI", "seeds"], rows)
    for key, what in (("difference", "Transfer minus scratch"),
                      ("probe_difference", "Transfer minus frozen probe")):
        if d.get(key):
            diff, lo, hi = _cells(key, (("diff", "pts"), ("lo", "pts"), ("hi", "pts")), d)
            body += f'<p class="key">{what}: {diff} points (95% CI {lo} to {hi}).</p>'
    body += _img(accuracy_figure(d, arms), "test accuracy of each arm with 95% intervals")
    return _section("3", "Is the final performance better with transfer than without?", body)


def _label_section(d: dict) -> str:
    lc = d.get("label_curve")
    if not lc:
        return ""
    more = "&gt; " if lc.get("lower_bound") else ""
    card = _card(more + _v("label_curve.factor", lc["factor"], "x"),
                 "more labels needed without transfer")
    body = (f'<div class="cards">{card}</div>'
            f'<p class="key">{_v("label_curve.text", lc["text"])}</p>'
            + _img(label_curve_figure(lc), "test accuracy against labelled examples per class"))
    if lc.get("note"):
        body += f'<p class="note">{_v("label_curve.note", lc["note"])}</p>'
    body += _label_table(lc)
    return _section("", "Label efficiency", body)


def _label_table(lc: dict) -> str:
    ticks = lc.get("labels") or lc["shots"]
    head = ["labelled examples per class"] + [str(t) for t in ticks]
    rows = [[_e(ARM_NAMES[a])] + [_v(f"label_curve.{a}.{i}", v, "pct")
                                  for i, v in enumerate(lc[a])] for a in ("transfer", "scratch")]
    return _table(head, rows)


def _confusion_section(d: dict, arms: list[str]) -> str:
    shown = [a for a in arms if d["arms"][a].get("confusion")]
    if not shown or not d.get("classes"):
        return ""
    note = f'<p class="note">{_v("confusion_note", d["confusion_note"])}</p>' \
        if d.get("confusion_note") else ""
    return _section("", "Confusion matrices",
                    _img(confusions_figure(d, shown), "confusion matrix of each arm") + note)


def _drops_section(d: dict) -> str:
    cd = d.get("class_drops")
    if cd is None:
        return ""
    if isinstance(cd, dict):
        return _section("", "Per-class drops", _drops_table(d, cd, "class_drops"))
    body = "".join(_drops_table(d, c, f"class_drops.{i}") for i, c in enumerate(cd))
    return _section("", "Per-class drops", body)


def _drops_table(d: dict, cd: dict, key: str) -> str:
    ref = ARM_NAMES.get(cd.get("reference"), cd.get("reference") or "the reference")
    body = (f"<p>Classes where transfer is at least "
            f"{_v(f'{key}.min_drop', cd.get('min_drop'), 'pct')} below {_e(ref)}:</p>")
    specs = (("class", "text"), ("transfer_acc", "pct"), ("reference_acc", "pct"),
             ("drop", "pct"), ("n", "int"))
    rows = [_cells(f"{key}.rows.{i}", specs, d) for i in range(len(cd.get("rows") or []))]
    if cd.get("note"):
        body += f'<p class="note">{_v(f"{key}.note", cd["note"])}</p>'
    return body + (_table(["class", "transfer", ref, "drop", "test examples"], rows) if rows
                   else "<p>None.</p>")


def _compute_section(d: dict, arms: list[str]) -> str:
    shown = [a for a in arms if d["arms"][a].get("compute")]
    if not shown:
        return ""
    specs = (("seconds", "sec"), ("flops", "sci"), ("kwh", "sci"), ("co2_g", "sci"))
    body = _table(["arm", "wall seconds", "FLOPs", "energy (kWh)", "CO₂ (g)"],
                  [[_arm(a)] + _cells(f"arms.{a}.compute", specs, d) for a in shown])
    key = "compute_assumptions" if d.get("compute_assumptions") else \
        f"arms.{shown[0]}.compute.assumptions"
    note = _lookup(d, key, None)
    if note:
        body += f'<p class="note">Estimates, not measurements: {_v(key, note)}</p>'
    return _section("", "Compute", body)


# -- helpers ---------------------------------------------------------------------------------
def _img(fig, alt: str) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img src="{uri}" alt="{_e(alt)}"></figure>'


def _v(key: str, value, fmt: str = "text") -> str:
    """One figure: shown formatted, tagged with its report.json path and exact value."""
    return (f'<span data-key="{_e(key)}" data-value="{_e(json.dumps(value, ensure_ascii=False))}"'
            f' data-fmt="{fmt}">{_e(_fmt(value, fmt))}</span>')


_FORMATS = {"pct": "{:.1%}", "pts": "{:+.1f}", "x": "{:.1f}×", "sec": "{:.1f} s", "sci": "{:.3g}"}


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "not reached" if fmt in ("int", "sec") else "n/a"
    return _FORMATS.get(fmt, "{}").format(100 * value if fmt == "pts" else value)


def _cells(prefix: str, specs, d: dict) -> list[str]:
    return [_v(f"{prefix}.{f}", _lookup(d, f"{prefix}.{f}", None), fmt) for f, fmt in specs]


def _lookup(d, key: str, default):
    try:
        for part in key.split("."):
            d = d[int(part)] if isinstance(d, list) else d[part]
        return d
    except (KeyError, IndexError, ValueError, TypeError):
        return default


def _card(big: str, caption: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="big">{big}</div>{caption}</div>'


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>" + "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>"


def _ci(prefix: str, arm: dict, *, bare: bool = False) -> str:
    if not arm.get("ci"):
        return ""
    lo, hi = arm["ci"]
    text = f'{_v(f"{prefix}.ci.0", lo, "pct")} to {_v(f"{prefix}.ci.1", hi, "pct")}'
    return text if bare else f"<br><small>95% CI {text}</small>"


def _arm(a: str) -> str:
    return f'<span class="dot" style="background:{COLOURS.get(a, "#57606a")}"></span>' \
           f'{_e(ARM_NAMES.get(a, a))}'


def _section(number: str, title: str, body: str) -> str:
    badge = f'<span class="num">{number}</span>' if number else ""
    return f"<section><h2>{badge}{_e(title)}</h2>{body}</section>"


def _arms(d: dict) -> list[str]:
    return sorted(d["arms"], key=lambda a: (ARM_ORDER + (a,)).index(a))


def _validate(d) -> None:
    missing = [k for k in ("title", "verdict", "arms") if not isinstance(d, dict) or not d.get(k)]
    missing += [f"verdict.{k}" for k in ("label", "reason") if not _lookup(d, f"verdict.{k}", 0)]
    missing += [f"arms.{a}.accuracy" for a in (d.get("arms") or {}) if isinstance(d, dict)
                and _lookup(d, f"arms.{a}.accuracy", None) is None]
    if missing:
        raise DataError(f"The report lacks {', '.join(dict.fromkeys(missing))}; see the "
                        "docstring of headstart.evaluation.report for the schema.")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _e(s) -> str:
    return html.escape(str(s), quote=True)


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
