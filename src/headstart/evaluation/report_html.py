"""The sections of report.html (see report.py for the schema and the page). Every figure goes
through `_v`, which tags it with its report.json path and exact value."""
from __future__ import annotations

import base64
import html
import io
import json

from .plots import (ARM_NAMES, COLOURS, _pyplot, accuracy_figure, confusions_figure,
                    curves_figure, label_curve_figure)

ARM_ORDER = ("probe", "transfer", "classic", "scratch")
BANNER = {"good": "#1a7f37", "caution": "#9a6700", "neutral": "#57606a", "bad": "#cf222e"}
_BY_LABEL = {"positive": "good", "negative": "bad"}  # reports without a "banner" key


def banner_kind(v: dict) -> str:
    return v.get("banner") or _BY_LABEL.get(v["label"], "neutral")


def header(d: dict) -> str:
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


def banner(v: dict) -> str:
    kind = banner_kind(v)
    top = _v("verdict.headline", v["headline"]) if v.get("headline") else \
        "Transfer: " + _v("verdict.label", v["label"])
    out = (f'<section class="banner" data-banner="{kind}" style="background:{BANNER[kind]}">'
           f'<div class="label">{top}</div>')
    if v.get("headline"):
        out += ("<p>Transfer against the best model without it: "
                f'<b>{_v("verdict.label", v["label"])}</b></p>')
    out += f'<p class="key">{_v("verdict.reason", v["reason"])}</p>'
    for key in ("advice", "baseline_reason", "scratch_reason"):
        if v.get(key):
            out += f'<p>{_v(f"verdict.{key}", v[key])}</p>'
    if v.get("forgetting_reason"):
        cls = "warn" if v.get("forgetting") else "ok"
        out += f'<p class="{cls}">{_v("verdict.forgetting_reason", v["forgetting_reason"])}</p>'
    if v.get("degenerate_reason"):
        out += f'<p class="warn">{_v("verdict.degenerate_reason", v["degenerate_reason"])}</p>'
    return out + "</section>"


def copies(d: dict) -> str:
    """The warning that test examples are copies of training ones, where there are any."""
    c = d.get("copies_of_training") or {}
    if not c.get("text"):
        return ""
    return f'<p class="warn">Warning: {_v("copies_of_training.text", c["text"])}</p>'


def indicator1(d: dict, arms: list[str]) -> str:
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
              for a in ("transfer", "classic", "scratch") if a in arms]
    return section("1", "Can the task be done with the transferred knowledge alone?",
                   f'<div class="cards">{"".join(cards)}</div>' + extra)


def _zero_shot_mapping(z: dict) -> str:
    mapping, unmapped = z.get("mapping") or {}, z.get("unmapped") or []
    if not mapping and not unmapped:
        return ""
    rows = [f"<li><b>{_e(c)}</b> ← {_e(', '.join(names))}</li>" for c, names in mapping.items()]
    rows += [f"<li><b>{_e(c)}</b> ← no source label (unmapped)</li>" for c in unmapped]
    return ('<details><summary>Zero-shot mapping of source labels to your classes</summary>'
            f'<ul class="note">{"".join(rows)}</ul></details>')


def indicator2(d: dict, arms: list[str]) -> str:
    if not any(d["arms"][a].get("history") for a in arms):
        return ""
    body, t = "", d.get("target")
    if t:
        body += (f'<p>Target: {_v("target.accuracy", t["accuracy"], "pct")} validation '
                 f'accuracy ({_v("target.rule", t.get("rule") or "")}).</p>')
    shown = [a for a in arms if "time_to_target" in d["arms"][a]]
    if shown:
        body += table(["arm", "epochs to target", "seconds to target", "epochs run",
                       "seconds run"], [[_arm(a)] + _time_cells(d, a) for a in shown])
    for key in ("speedup", "speedup_classic"):
        if (d.get(key) or {}).get("text"):
            body += f'<p class="key">{_v(f"{key}.text", d[key]["text"])}</p>'
    if d.get("time_note"):
        body += f'<p class="note">{_v("time_note", d["time_note"])}</p>'
    body += img(curves_figure(d, arms), "validation accuracy against epochs and seconds")
    return section("2", "How long does the task take to learn, with transfer and without?", body)


def _time_cells(d: dict, a: str) -> list[str]:
    prefix = f"arms.{a}.time_to_target"
    if d["arms"][a].get("strategy") != "classic":
        return cells(prefix, (("epochs", "int"), ("seconds", "sec"), ("total_epochs", "int"),
                              ("total_seconds", "sec")), d)
    t = d["arms"][a]["time_to_target"]
    reached = "one fit" if t.get("reached") else "not reached"
    return [reached] + cells(prefix, (("seconds", "sec"),), d) + ["no epochs (one fit)"] + \
        cells(prefix, (("total_seconds", "sec"),), d)


def indicator3(d: dict, arms: list[str]) -> str:
    rows = []
    for a in arms:
        r = d["arms"][a]
        seeds = ", ".join(_v(f"arms.{a}.seed_accuracies.{i}", s, "pct")
                          for i, s in enumerate(r.get("seed_accuracies") or []))
        rows.append([_arm(a), _v(f"arms.{a}.strategy", r.get("strategy") or ""),
                     _v(f"arms.{a}.accuracy", r["accuracy"], "pct"),
                     _ci(f"arms.{a}", r, bare=True),
                     _v(f"arms.{a}.val_accuracy", r.get("val_accuracy"), "pct"),
                     seeds or "one run"])
    body = table(["arm", "strategy", "test accuracy", "95% CI", "validation", "seeds"], rows)
    if (d["arms"].get("classic") or {}).get("model"):
        body += _classic_model(d)
    v = d["verdict"]
    if v.get("difference") and v.get("recipe"):
        what = f"{ARM_NAMES[v['recipe']]} minus {ARM_NAMES[v['baseline']]} (the verdict)"
        body += _diff_line(d, "verdict.difference", what[0].upper() + what[1:])
    for key, what in (("classic_difference", "Transfer minus the classic model"),
                      ("difference", "Transfer minus scratch"),
                      ("probe_difference", "Transfer minus frozen probe")):
        if d.get(key):
            body += _diff_line(d, key, what)
    body += img(accuracy_figure(d, arms), "test accuracy of each arm with 95% intervals")
    return section("3", "Is the final performance better with transfer than without?", body)


def _diff_line(d: dict, key: str, what: str) -> str:
    diff, lo, hi = cells(key, (("diff", "pts"), ("lo", "pts"), ("hi", "pts")), d)
    return f'<p class="key">{_e(what)}: {diff} points (95% CI {lo} to {hi}).</p>'


def _classic_model(d: dict) -> str:
    m, key = d["arms"]["classic"]["model"], "arms.classic.model"
    out = (f'<p>The classic model: {_v(f"{key}.description", m["description"])}; '
           f'{_v(f"{key}.chosen_by", m.get("chosen_by") or "")}.</p>')
    specs = (("features", "text"), ("C", "num"), ("cv_accuracy", "pct"))
    rows = [cells(f"{key}.measured.{i}", specs, d) for i in range(len(m.get("measured") or []))]
    if rows:
        out += ('<details><summary>Settings tried by cross-validation on the training part'
                '</summary>' + table(["features", "C", "cross-validated accuracy"], rows)
                + "</details>")
    return out


def label_section(d: dict) -> str:
    lc = d.get("label_curve")
    if not lc:
        return ""
    more = "&gt; " if lc.get("lower_bound") else ""
    who = _e(lc.get("reference_name") or "scratch")
    card = _card(more + _v("label_curve.factor", lc["factor"], "x"),
                 f"as many labels needed by {who} to match transfer")
    body = (f'<div class="cards">{card}</div>'
            f'<p class="key">{_v("label_curve.text", lc["text"])}</p>')
    for a, e in (lc.get("by_arm") or {}).items():
        if a != lc.get("reference"):
            body += f'<p>{_v(f"label_curve.by_arm.{a}.text", e["text"])}</p>'
    body += img(label_curve_figure(lc), "test accuracy against labelled examples per class")
    if lc.get("note"):
        body += f'<p class="note">{_v("label_curve.note", lc["note"])}</p>'
    key = "labels" if lc.get("labels") else "shots"
    head = [_e("labelled examples per class")] + [_v(f"label_curve.{key}.{i}", t)
                                              for i, t in enumerate(lc[key])]
    rows = [[_e(ARM_NAMES[a])] + [_v(f"label_curve.{a}.{i}", v, "pct")
                                  for i, v in enumerate(lc[a])]
            for a in ("transfer", "classic", "scratch") if lc.get(a)]
    return section("", "Label efficiency", body + table(head, rows, raw_head=True))


def confusion_section(d: dict, arms: list[str]) -> str:
    shown = [a for a in arms if d["arms"][a].get("confusion")]
    if not shown or not d.get("classes"):
        return ""
    note = f'<p class="note">{_v("confusion_note", d["confusion_note"])}</p>' \
        if d.get("confusion_note") else ""
    return section("", "Confusion matrices",
                   img(confusions_figure(d, shown), "confusion matrix of each arm") + note)


def drops_section(d: dict) -> str:
    cd = d.get("class_drops")
    if cd is None:
        return ""
    if isinstance(cd, dict):
        return section("", "Per-class drops", _drops_table(d, cd, "class_drops"))
    body = "".join(_drops_table(d, c, f"class_drops.{i}") for i, c in enumerate(cd))
    return section("", "Per-class drops", body)


def _drops_table(d: dict, cd: dict, key: str) -> str:
    ref = ARM_NAMES.get(cd.get("reference"), cd.get("reference") or "the reference")
    body = (f"<p>Classes where transfer is at least "
            f"{_v(f'{key}.min_drop', cd.get('min_drop'), 'pct')} below {_e(ref)}:</p>")
    specs = (("class", "text"), ("transfer_acc", "pct"), ("reference_acc", "pct"),
             ("drop", "pct"), ("n", "int"))
    rows = [cells(f"{key}.rows.{i}", specs, d) for i in range(len(cd.get("rows") or []))]
    if cd.get("note"):
        body += f'<p class="note">{_v(f"{key}.note", cd["note"])}</p>'
    return body + (table(["class", "transfer", ref, "drop", "test examples"], rows) if rows
                   else "<p>None.</p>")


def compute_section(d: dict, arms: list[str]) -> str:
    shown = [a for a in arms if d["arms"][a].get("compute")]
    if not shown:
        return ""
    specs = (("seconds", "sec"), ("flops", "sci"), ("kwh", "sci"), ("co2_g", "sci"))
    body = table(["arm", "wall seconds", "FLOPs", "energy (kWh)", "CO₂ (g)"],
                 [[_arm(a)] + cells(f"arms.{a}.compute", specs, d) for a in shown])
    key = "compute_assumptions" if d.get("compute_assumptions") else \
        f"arms.{shown[0]}.compute.assumptions"
    note = lookup(d, key, None)
    if note:
        body += f'<p class="note">Estimates, not measurements: {_v(key, note)}</p>'
    return section("", "Compute", body)


# -- helpers ---------------------------------------------------------------------------------
def img(fig, alt: str) -> str:
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


_FORMATS = {"pct": "{:.1%}", "pts": "{:+.1f}", "x": "{:.1f}×", "sec": "{:.1f} s", "sci": "{:.3g}",
            "num": "{:g}"}


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "not reached" if fmt in ("int", "sec") else "n/a"
    return _FORMATS.get(fmt, "{}").format(100 * value if fmt == "pts" else value)


def cells(prefix: str, specs, d: dict) -> list[str]:
    return [_v(f"{prefix}.{f}", lookup(d, f"{prefix}.{f}", None), fmt) for f, fmt in specs]


def lookup(d, key: str, default):
    try:
        for part in key.split("."):
            d = d[int(part)] if isinstance(d, list) else d[part]
        return d
    except (KeyError, IndexError, ValueError, TypeError):
        return default


def _card(big: str, caption: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="big">{big}</div>{caption}</div>'


def table(head: list[str], rows: list[list[str]], *, raw_head: bool = False) -> str:
    """Rows are HTML already; so is the head with raw_head (else it is escaped text)."""
    th = "".join(f"<th>{h if raw_head else _e(h)}</th>" for h in head)
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


def section(number: str, title: str, body: str) -> str:
    badge = f'<span class="num">{number}</span>' if number else ""
    return f"<section><h2>{badge}{_e(title)}</h2>{body}</section>"


def _e(s) -> str:
    return html.escape(str(s), quote=True)
