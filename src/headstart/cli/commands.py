"""The sub-commands. Each add_X registers its arguments; each run_X calls the library."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..exceptions import ConfigError
from ..training.config import TrainConfig
from ..training.options import PRETRAIN, TRAIN
from .options import add_options, add_reading_options, config_from_args

# Each run_X imports the library where it runs, deferred on purpose: building the parser (and
# so every `--help`) must not load torch, 2-3 s idle and far more on a loaded machine.
DEMO_PER_CLASS = 100


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the backbones in the zoo")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    from .. import modalities  # deferred on purpose (see the top)
    from ..backbones import list_backbones, size_of

    rows = []
    for c in list_backbones():
        size = size_of(c)  # recorded in the registry (or counted once and cached)
        rows.append({"name": c.name, "modality": c.modality, "input_size": c.input_size,
                     "params_m": round(size.parameters / 1e6, 2),
                     "gflops": round(size.flops / 1e9, 2), "feature_dim": c.feature_dim,
                     "installed": c.weights_installed(), "pretraining": c.pretraining,
                     "license": c.license, "weights": c.weights_source,
                     "normalisation": f"mean={c.mean[0]:.3f} std={c.std[0]:.3f} on [0,1]",
                     "layer_groups": list(c.layer_groups)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20}{'input':>8}{'params':>8}{'GFLOPs':>8}  {'weights':<10}{'license':<12}"
          "pre-training")
    for r in rows:
        size = f"{r['input_size']}{modalities.get(r['modality']).size_unit}"
        print(f"{r['name']:<20}{size:>8}{r['params_m']:>7.1f}M"
              f"{r['gflops']:>8.2f}  "
              f"{'installed' if r['installed'] else 'missing':<10}{r['license']:<12}"
              f"{r['pretraining']}")
    print("\ninput: image side in pixels, or text window in tokens (longer texts are split into "
          "windows and pooled); GFLOPs per image or per full window")
    print("\nlayer groups (early -> late):")
    for r in rows:
        print(f"  {r['name']:<20}{' '.join(r['layer_groups'])}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images (ImageNet top-5, or with a trained run) "
                       "or texts (with a trained text run)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files or folders of them; for a text run: texts, .txt files "
                   "(one text each) or folders of them, or .csv/.tsv/.jsonl files (their text "
                   "column). An INPUT that looks like a "
                   "file name (a path separator or a suffix such as .txt) must exist; pass a "
                   "text that looks like one with --text")
    p.add_argument("--text", action="append", default=[], metavar="TEXT",
                   help="a text to classify as it is, never read as a file (repeatable)")
    p.add_argument("--run", help="a run directory from `headstart train`")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", help="weights file/folder/URL for the backbone")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs, listed on "
                   "stderr, instead of stopping")
    add_reading_options(p, ("max_pixels", "encoding", "text_column"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict)


def _with_reading_args(trained, args):
    """The run, reading its inputs as the command line says where it says so."""
    for name in ("max_pixels", "encoding", "text_column", "label_column"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(trained.config, name, value)
    return trained


def run_predict(args) -> int:
    from .. import api, modalities  # deferred on purpose (see the top)
    from ..backbones import get_config

    if not args.inputs and not args.text:
        raise ConfigError("nothing to predict: pass image files, or texts (--text) for a text "
                          "run")
    if args.top < 1:
        raise ConfigError(f"--top must be 1 or more, got {args.top}")
    skipped = [] if args.skip_bad else None
    if args.run:
        trained = _with_reading_args(api.load(args.run), args)
        inputs, names = trained.modality.inputs_from_words(args.inputs, args.text,
                                                           trained.config, args.run)
        results = api.predict(trained, inputs, top=args.top, skipped=skipped)
    else:  # the source network's own classifier, on inputs of its modality
        m = modalities.of(get_config(args.backbone))
        inputs, names = m.inputs_from_words(args.inputs, args.text, TrainConfig(), None)
        results = api.source_predict(inputs, backbone=args.backbone, weights=args.weights,
                                     top=args.top, skipped=skipped,
                                     max_pixels=args.max_pixels or TrainConfig.max_pixels)
    if skipped:
        api.report_skipped(skipped, lambda line: print(line, file=sys.stderr))
    rows = [(n, r) for n, r in zip(names, results) if r is not None]
    if args.json:
        print(json.dumps([{"image": str(i), "top": [{"label": n, "probability": round(p, 6)}
                                                    for n, p in r]}
                          for i, r in rows], indent=2))
        return 0
    for name, result in rows:
        print(name)
        for rank, (name, prob) in enumerate(result, 1):
            print(f"  {rank}. {name:<30} {prob:.4f}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on images or texts")
    p.add_argument("data", nargs="?", help="folder of class sub-folders (images or .txt files), "
                   "CSV of path,label, or CSV/TSV/JSONL of text,label (default: the shipped "
                   f"animal-mnist demo, {DEMO_PER_CLASS} per class)")
    p.add_argument("--out", required=True, help="run directory to create")
    add_options(p, TRAIN)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from .. import api  # deferred on purpose (see the top)
    from ..backbones import cache_dir
    from ..data.shipped import write_animal_mnist

    cfg = config_from_args(args, TRAIN)
    data, test = args.data, None
    if data is None:
        root = write_animal_mnist(cache_dir() / "datasets" / f"animal-mnist-{DEMO_PER_CLASS}",
                                  per_class=DEMO_PER_CLASS)
        data, test = root / "train", root / "test"
        print(f"no DATA given: using the shipped animal-mnist demo ({DEMO_PER_CLASS} images per "
              f"class) in {root}")
    result = api.train(data, args.out, config=cfg, overwrite=args.overwrite,
                       restart=args.restart, progress=not args.quiet)
    if result.run_dir is None:  # a non-zero rank under torchrun
        return 0
    m = result.metrics
    val = f"val accuracy {m['val_accuracy']:.4f}" if m["val_accuracy"] is not None else "no val"
    if m.get("refit_full"):
        val += (f" ({m['val_examples']} examples, of the model selected on the training "
                f"split; the saved model was then trained on all "
                f"{m['refit_full']['examples']})")
    else:
        val += f" ({m['val_examples']} examples)"
    print(f"done in {m['seconds']:.0f}s: {val}, run saved to {result.run_dir}")
    if test is not None:
        report, _ = api.evaluate(result, test, progress=not args.quiet)
        print(f"held-out test accuracy {report['accuracy']:.4f} on {report['n']} examples "
              f"({test})")
    return 0


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train your own source model from scratch on an "
                       "abundant related dataset")
    p.add_argument("data", help="labelled source data, in any form `train` accepts")
    p.add_argument("--arch", required=True, help="zoo architecture to train from random init, "
                   "e.g. small_cnn (28-64 px images) or efficientnet_lite0 (see `headstart models`)")
    p.add_argument("--out", required=True, help="source model directory to create")
    p.add_argument("--sample-size", type=int, default=500, help="held-out source examples kept "
                   "with the model to measure retention after fine-tuning (0: none)")
    add_options(p, PRETRAIN)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from ..pretrain import pretrain  # deferred on purpose (see the top)

    cfg = config_from_args(args, PRETRAIN, backbone=args.arch, strategy="scratch")
    result = pretrain(args.data, args.out, arch=args.arch, config=cfg,
                      sample_size=args.sample_size, overwrite=args.overwrite,
                      restart=args.restart, progress=not args.quiet)
    if result.run_dir is None:
        return 0
    m = result.metrics
    print(f"done in {m['seconds']:.0f}s: held-out accuracy {m['val_accuracy']:.4f} "
          f"({m['val_examples']} examples); source model saved to {result.run_dir}")
    print(f"transfer from it with: headstart train TARGET --backbone {result.run_dir} --out RUN")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="measure a trained run on labelled data")
    p.add_argument("run")
    p.add_argument("data", help="labelled data in the form the run was trained on")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs, listed")
    add_reading_options(p, ("max_pixels", "encoding", "text_column", "label_column"))
    p.add_argument("--plot", help="confusion-matrix PNG path (default RUN/confusion_<data>.png)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from .. import api  # deferred on purpose (see the top)
    from ..data.duplicates import describe_seen
    from ..evaluation import format_confusion, format_report, plot_confusion
    from ..safeio import safe_name  # the data's name becomes a file name in the run
    from ..training.distributed import is_main  # deferred: it needs torch

    trained = _with_reading_args(api.load(args.run), args)
    report, skipped = api.evaluate(trained, args.data, skip_bad=args.skip_bad,
                                   progress=not args.json and sys.stderr.isatty())
    if not is_main():  # under torchrun rank 0 alone reports and plots
        return 0
    plot = Path(args.plot) if args.plot else Path(args.run) / \
        f"confusion_{safe_name(Path(args.data).name or 'data', limit=120)}.png"
    plot_confusion(report, plot, title=f"{Path(args.run).name} on {Path(args.data).name}")
    if args.json:
        print(json.dumps({**report, "skipped": skipped, "confusion_png": str(plot)}))
        return 0
    api.report_skipped(skipped, print)
    for note in report.get("ignored", []):
        print(note)
    print(format_report(report))
    print()
    print(format_confusion(report))
    print(f"\nconfusion matrix plot: {plot}")
    warning = describe_seen(report.get("copies_of_training"), trained.modality.plural)
    if warning:
        print(warning)
    return 0


def add_make_dataset(sub) -> None:
    p = sub.add_parser("make-dataset", help="write a shipped dataset as image or text folders")
    p.add_argument("name", choices=["animal-mnist", "bbc-news", "bbc-headlines"],
                   help="bbc-headlines: the BBC articles' headlines, one sentence per text")
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=None, help="training images per class")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_make_dataset)


def run_make_dataset(args) -> int:
    from ..data.shipped import write_animal_mnist, write_bbc_news  # deferred (see the top)

    if args.per_class is not None and args.per_class < 1:
        raise ConfigError(f"--per-class must be 1 or more (or left out for all), got "
                          f"{args.per_class}")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be a whole number from 0 to {2**32 - 1}, got {args.seed}")
    if args.name in ("bbc-news", "bbc-headlines"):
        heads = args.name == "bbc-headlines"
        root = write_bbc_news(args.out, per_class=args.per_class, seed=args.seed, headlines=heads)
        held = "678-headline" if heads else "700-article"
        print(f"wrote {root}/train (training pool) and {root}/test ({held} hold-out)")
        return 0
    root = write_animal_mnist(args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {root}/train (training pool) and {root}/test (2,000-image hold-out)")
    return 0
