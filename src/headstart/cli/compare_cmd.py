"""`headstart compare`: transfer vs from-scratch on the user's data, with a report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..exceptions import ConfigError
from ..training.options import COMPARE
from .options import add_options, config_from_args

EXIT_NEGATIVE = 3

EPILOG = """\
four arms on the same split (the first three with the same budget of gradient epochs):
  probe     frozen pre-trained features + linear head (and zero-shot where labels map)
  transfer  --strategy (as `headstart train` by default) from the pre-trained weights
  scratch   the same architecture from random weights
  classic   logistic regression on small pixels or HOG (images), TF-IDF (texts): seconds

The verdict is printed first: which model to use, and whether transfer beats the best model
without it (classic or scratch, whichever is better on validation) beyond noise: positive,
none (within noise) or negative, from the 95% interval on the test part. A scratch arm at
chance did not learn and is not counted. report.json and report.html are written into
--out, complete or not at all.

exit status: 0 on success; 2 on a usage or data error (one line on stderr);
3 with --fail-on-negative when the verdict is negative transfer; 130 when interrupted.
"""


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="transfer vs training from scratch: verdict, the three "
                       "indicators, report.html", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="labelled images or texts, as for `headstart train`")
    p.add_argument("--out", required=True, help="report directory to create")
    p.add_argument("--seeds", type=int, default=1, help="train every arm this many times "
                   "(seed-aware intervals; default 1)")
    p.add_argument("--target", type=float, help="validation accuracy for time-to-target, in "
                   "(0, 1] (default: 95%% of scratch's best)")
    p.add_argument("--label-curve", metavar="SPEC", help="examples per class, e.g. "
                   "1,2,5,10,20,all: accuracy of transfer and scratch at each")
    p.add_argument("--test", help="labelled test data (default: a stratified hold-out of DATA)")
    p.add_argument("--test-fraction", type=float, help="share of DATA held out for testing "
                   "when there is no --test (default 0.25)")
    p.add_argument("--fail-on-negative", action="store_true",
                   help=f"exit with status {EXIT_NEGATIVE} when the verdict is negative transfer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    add_options(p.add_argument_group("training and data options (as for `headstart train`)"),
                COMPARE)
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    if args.test is not None and args.test_fraction is not None:
        raise ConfigError("--test-fraction has no effect with --test; pass one of them")
    from .. import compare  # deferred on purpose: the library loads torch, which `--help` does
    # not need

    cfg = config_from_args(args, COMPARE)
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        report = compare.compare(args.data, args.out, config=cfg, test=args.test,
                         test_fraction=0.25 if args.test_fraction is None else args.test_fraction,
                         seeds=args.seeds, target=args.target, label_curve=args.label_curve,
                         overwrite=args.overwrite, progress=not args.quiet, log=log)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\ninterrupted: nothing was written to {args.out}", file=sys.stderr)
        return 130
    from ..training.distributed import is_main  # deferred: it needs torch

    if not is_main():  # under torchrun rank 0 alone prints the summary
        return 0
    for line in summary_lines(report):
        print(line)
    negative = report["verdict"]["label"] == "negative"
    return EXIT_NEGATIVE if args.fail_on_negative and negative else 0


def summary_lines(report: dict) -> list[str]:
    """The verdict and what to use first, then the three indicators, the label factor and the
    report path. Every figure is report.json's, formatted as on the page."""
    v, a = report["verdict"], report["arms"]
    lines = [f"verdict: {v['label']}. {v['reason']}"]
    lines += [f"  {v[k]}" for k in ("advice", "baseline_reason", "scratch_reason") if v.get(k)]
    if v.get("forgetting_reason") and v.get("recipe") == "probe":  # what to use instead
        lines.append(("warning: " if v.get("forgetting") else "note: ") + v["forgetting_reason"])
    if v.get("degenerate_reason"):
        lines.append(f"warning: {v['degenerate_reason']}")
    if (report.get("copies_of_training") or {}).get("text"):
        lines.append(f"warning: {report['copies_of_training']['text']}")
    size = (report.get("budget") or {}).get("image_size")
    net = f" ({report['backbone']}" + (f" at {size} px)" if size else ")") \
        if report.get("backbone") else ""
    one = f"1. transferred knowledge alone{net}: frozen probe {_pct(a['probe'])}"
    z = report.get("zero_shot") or {}
    if z.get("accuracy") is not None:
        one += (f"; zero-shot {z['accuracy']:.1%} over {z['classes_mapped']} of "
                f"{z['classes_total']} classes")
    lines.append(one)
    t = report["target"]["accuracy"]
    times = ", ".join(f"{name} {_ttt(a[arm]['time_to_target'], arm)}" for arm, name in (
        ("transfer", "transfer"), ("scratch", "scratch"), ("classic", "classic")) if arm in a)
    speed = " ".join(report[k]["text"] for k in ("speedup", "speedup_classic") if report.get(k))
    lines.append(f"2. time to {t:.1%} validation accuracy: {times}. {speed}")
    shown = "; ".join(f"{name} {_pct(a[arm])}" for arm, name in (
        ("transfer", "transfer"), ("probe", "probe"), ("classic", "classic"),
        ("scratch", "scratch")) if arm in a)
    d = v.get("difference") or report["difference"]
    what = f"{v.get('recipe', 'transfer')} - {v.get('baseline', 'scratch')}"
    lines.append(f"3. test accuracy: {shown}; {what} {100 * d['diff']:+.1f} points "
                 f"(95% CI {100 * d['lo']:+.1f} to {100 * d['hi']:+.1f})")
    lc = report.get("label_curve")
    if lc:
        lines.append(f"label efficiency: {lc['text']}")
    if report.get("out"):
        lines.append(f"report: {Path(report['out']) / 'report.html'}")
    return lines


def _pct(arm: dict) -> str:
    lo, hi = arm["ci"]
    return f"{arm['accuracy']:.1%} (95% CI {lo:.1%} to {hi:.1%})"


def _ttt(t: dict, arm: str) -> str:
    if arm == "classic":  # no epochs: one fit
        return (f"one fit of {t['seconds']:.1f} s" if t["reached"] else
                f"not reached (one fit of {t['total_seconds']:.1f} s)")
    if not t["reached"]:
        return f"not reached in {_n(t['total_epochs'])} / {t['total_seconds']:.1f} s"
    return f"{_n(t['epochs'])} / {t['seconds']:.1f} s"


def _n(epochs: int) -> str:
    return f"{epochs} epoch" + ("" if epochs == 1 else "s")
