"""`headstart compare`: transfer vs from-scratch on the user's data, with a report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..exceptions import ConfigError
from ..training.config import TrainConfig

EXIT_NEGATIVE = 3

EPILOG = """\
three arms, same split, same budget of gradient epochs:
  probe     frozen pre-trained features + linear head (and zero-shot where labels map)
  transfer  --strategy (fine_tune by default) from the pre-trained weights
  scratch   the same architecture from random weights

The verdict is printed first: positive, none (within noise) or negative, from the 95%
interval of transfer - scratch on the test part. report.json and report.html are written
into --out, complete or not at all.

exit status: 0 on success; 2 on a usage or data error (one line on stderr);
3 with --fail-on-negative when the verdict is negative transfer; 130 when interrupted.
"""


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="transfer vs training from scratch: verdict, the three "
                       "indicators, report.html", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="labelled images or texts, as for `headstart train`")
    p.add_argument("--out", required=True, help="report directory to create")
    d = TrainConfig()
    p.add_argument("--backbone", help="a zoo name (see `headstart models`; default "
                   "efficientnet_lite0 for images, minilm_l6 for texts) or a source model "
                   "directory from `headstart pretrain`")
    p.add_argument("--strategy", default=d.strategy, choices=["auto", "fine_tune", "gradual",
                                                             "contrastive", "linear_probe"],
                   help="the transfer arm's strategy (default auto, what `train` does)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"gradient epochs of every arm (default {d.epochs})")
    p.add_argument("--seeds", type=int, default=1, help="train every arm this many times "
                   "(seed-aware intervals; default 1)")
    p.add_argument("--target", type=float, help="validation accuracy for time-to-target, in "
                   "(0, 1] (default: 95%% of scratch's best)")
    p.add_argument("--label-curve", metavar="SPEC", help="examples per class, e.g. "
                   "1,2,5,10,20,all: accuracy of transfer and scratch at each")
    p.add_argument("--test", help="labelled test data (default: a stratified hold-out of DATA)")
    p.add_argument("--test-fraction", type=float, help="share of DATA held out for testing "
                   "when there is no --test (default 0.25)")
    p.add_argument("--image-size", default="auto", help="pixels, or auto (measured once)")
    p.add_argument("--fail-on-negative", action="store_true",
                   help=f"exit with status {EXIT_NEGATIVE} when the verdict is negative transfer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    _training_args(p, d)
    p.set_defaults(func=run_compare)


def _training_args(p, d: TrainConfig) -> None:
    g = p.add_argument_group("training and data options (as for `headstart train`)")
    g.add_argument("--lr", type=float, help="top learning rate (default: the strategy's)")
    g.add_argument("--unfreeze", default=d.unfreeze, help="fine_tune: N top groups, or all")
    g.add_argument("--l2sp", type=float, default=d.l2sp, help="L2-SP strength for the transfer "
                   "arm (0: off)")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g.add_argument("--seed", type=int, default=d.seed, help="first seed; also the test split's")
    g.add_argument("--patience", type=int, default=d.patience)
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    g.add_argument("--no-augment", action="store_true")
    g.add_argument("--weights", help="your own weights for the pre-trained arms")
    g.add_argument("--skip-bad", action="store_true", help="skip unreadable images, listed")
    g.add_argument("--text-column", help="texts: the column holding the text")
    g.add_argument("--label-column", help="the column holding the label")
    g.add_argument("--encoding", default=d.encoding, help="texts: file encoding")
    g.add_argument("--truncate", action="store_true",
                   help="texts: keep only the first window of long texts")


def run_compare(args) -> int:
    from ..compare import compare

    if args.test is not None and args.test_fraction is not None:
        raise ConfigError("--test-fraction has no effect with --test; pass one of them")
    cfg = TrainConfig(
        backbone=args.backbone, strategy=args.strategy, epochs=args.epochs, lr=args.lr,
        unfreeze=args.unfreeze, image_size=args.image_size, batch_size=args.batch_size,
        val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        flip=not args.no_flip, augment=not args.no_augment, weights=args.weights,
        skip_bad=args.skip_bad, text_column=args.text_column, label_column=args.label_column,
        encoding=args.encoding, truncate=args.truncate, l2sp=args.l2sp)
    log = (lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        report = compare(args.data, args.out, config=cfg, test=args.test,
                         test_fraction=0.25 if args.test_fraction is None else args.test_fraction,
                         seeds=args.seeds, target=args.target, label_curve=args.label_curve,
                         overwrite=args.overwrite, progress=not args.quiet, log=log)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\ninterrupted: nothing was written to {args.out}", file=sys.stderr)
        return 130
    for line in summary_lines(report):
        print(line)
    negative = report["verdict"]["label"] == "negative"
    return EXIT_NEGATIVE if args.fail_on_negative and negative else 0


def summary_lines(report: dict) -> list[str]:
    """The verdict first, then the three indicators, the label factor and the report path."""
    v, a = report["verdict"], report["arms"]
    lines = [f"verdict: {v['label']}. {v['reason']}"]
    if v.get("forgetting"):
        lines.append(f"warning: {v['forgetting_reason']}")
    one = f"1. transferred knowledge alone: frozen probe {_pct(a['probe'])}"
    z = report.get("zero_shot") or {}
    if z.get("accuracy") is not None:
        one += (f"; zero-shot {z['accuracy']:.1%} over {z['classes_mapped']} of "
                f"{z['classes_total']} classes")
    lines.append(one)
    t = report["target"]["accuracy"]
    lines.append(f"2. time to {t:.1%} validation accuracy: transfer "
                 f"{_ttt(a['transfer']['time_to_target'])}, scratch "
                 f"{_ttt(a['scratch']['time_to_target'])}. {report['speedup']['text']}")
    d = report["difference"]
    lines.append(f"3. test accuracy: transfer {_pct(a['transfer'])}, scratch "
                 f"{_pct(a['scratch'])}; transfer - scratch {100 * d['diff']:+.1f} points "
                 f"(95% CI {100 * d['lo']:+.1f} to {100 * d['hi']:+.1f})")
    lc = report.get("label_curve")
    if lc:
        more = "> " if lc["lower_bound"] else ""
        lines.append(f"label efficiency: factor {more}{lc['factor']:.1f}: {lc['text']}")
    if report.get("out"):
        lines.append(f"report: {Path(report['out']) / 'report.html'}")
    return lines


def _pct(arm: dict) -> str:
    lo, hi = arm["ci"]
    return f"{arm['accuracy']:.1%} (95% CI {lo:.1%} to {hi:.1%})"


def _ttt(t: dict) -> str:
    if not t["reached"]:
        return f"not reached in {t['total_epochs']} epochs / {t['total_seconds']:.1f} s"
    return f"{t['epochs']} epoch(s) / {t['seconds']:.1f} s"
