"""The sub-commands. Each add_X registers its arguments; each run_X calls the library."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import api
from ..backbones import cache_dir, count_flops, count_parameters, create_backbone
from ..backbones import list_backbones
from ..evaluation import format_confusion, format_report, plot_confusion
from ..strategies import STRATEGIES
from ..training.config import REFIT_MODES, TrainConfig

DEMO_PER_CLASS = 100


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the backbones in the zoo")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    rows = []
    for c in list_backbones():
        b = create_backbone(c.name, pretrained=False)
        rows.append({"name": c.name, "modality": c.modality, "input_size": c.input_size,
                     "params_m": round(count_parameters(b) / 1e6, 2),
                     "gflops": round(count_flops(b) / 1e9, 2), "feature_dim": c.feature_dim,
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
        unit = "tok" if r["modality"] == "text" else "px"
        print(f"{r['name']:<20}{r['input_size']:>5}{unit:<3}{r['params_m']:>7.1f}M"
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
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files; for a text run: texts, .txt files (one text each), or "
                   ".csv/.tsv/.jsonl files (their text column)")
    p.add_argument("--run", help="a run directory from `headstart train`")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", help="weights file/folder/URL for the backbone")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_predict)


def run_predict(args) -> int:
    if args.run:
        trained = api.load(args.run)
        inputs, names = args.images, args.images
        if trained.modality == "text":
            inputs, names = _texts_to_predict(args.images, trained.config)
        results = api.predict_images(trained, inputs, top=args.top)
        args.images = names
    else:
        results = api.source_predict(args.images, backbone=args.backbone, weights=args.weights,
                                     top=args.top)
    if args.json:
        print(json.dumps([{"image": str(i), "top": [{"label": n, "probability": round(p, 6)}
                                                    for n, p in r]}
                          for i, r in zip(args.images, results)], indent=2))
        return 0
    for image, result in zip(args.images, results):
        print(image)
        for rank, (name, prob) in enumerate(result, 1):
            print(f"  {rank}. {name:<30} {prob:.4f}")
    return 0


def _common_train_args(p, *, pretrain: bool = False) -> None:
    d = TrainConfig()
    if not pretrain:
        p.add_argument("--backbone", default=d.backbone, help="a zoo name (see `headstart "
                       "models`), a source model directory from `headstart pretrain`, a "
                       "Hugging Face / sentence-transformers directory, or auto (ranked on "
                       "your data by `headstart rank`; also sets --strategy and --unfreeze)")
        p.add_argument("--strategy", default=d.strategy, choices=list(STRATEGIES),
                       help="linear_probe: frozen backbone + logistic head; fine_tune (default): "
                       "head, then the top groups with discriminative rates; gradual: one more "
                       "group per epoch; scratch: same network, random init; contrastive: "
                       "few-shot, the backbone learns from pairs of examples (SetFit-style), "
                       "then a logistic head")
        p.add_argument("--unfreeze", default=d.unfreeze,
                       help="fine_tune, contrastive: N top groups, or all")
        p.add_argument("--cut", default=d.cut, choices=["auto", "none"],
                       help="images: auto (default) also measures earlier layer cuts of the "
                       "backbone and keeps one where it clearly beats the whole network; none: "
                       "the whole network (a particular cut: --backbone NAME@GROUP)")
        p.add_argument("--l2sp", type=float, default=d.l2sp, help="L2-SP strength (e.g. 0.01): "
                       "pull fine-tuned weights towards the pre-trained ones (0: off)")
        p.add_argument("--weights", help="your own weights for the backbone: file, folder or URL")
        p.add_argument("--refit", default=d.refit, choices=list(REFIT_MODES),
                       help="after validation has chosen the model, learn from the validation "
                       "examples too. head (default): refit the final closed-form head "
                       "(linear_probe, contrastive) on training + validation; full: also train "
                       "again from the start on training + validation for the epochs validation "
                       "chose (about twice the time); none: keep the training-split model")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=None, help="top learning rate")
    p.add_argument("--image-size", default="auto", help="pixels, or auto (measured)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (text, digits)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images, listed")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"])
    p.add_argument("--bn-stats", default=d.bn_stats, choices=["auto", "keep", "update"],
                   help="BatchNorm running statistics while fine-tuning (auto: keep pre-trained)")
    p.add_argument("--text-column", help="texts: the column holding the text (default: text, "
                   "sentence, content, ...)")
    p.add_argument("--label-column", help="the column holding the label (default: label, "
                   "category, class, topic, ...)")
    p.add_argument("--encoding", default=d.encoding,
                   help="texts: file encoding (default utf-8; e.g. cp1252 for old Windows files)")
    p.add_argument("--truncate", action="store_true", help="texts: keep only the first window "
                   "of long texts (default: split into windows and pool)")
    p.add_argument("--layers", default=d.layers, help="texts: features pool the last N "
                   "transformer layers, concatenated (default 1, the sentence embedding); auto "
                   "measures 1, 2 and 4 by cross-validation on the training texts")


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier on images or texts")
    p.add_argument("data", nargs="?", help="folder of class sub-folders (images or .txt files), "
                   "CSV of path,label, or CSV/TSV/JSONL of text,label (default: the shipped "
                   f"animal-mnist demo, {DEMO_PER_CLASS} per class)")
    p.add_argument("--out", required=True, help="run directory to create")
    _common_train_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def _config_from_args(args, **fixed) -> TrainConfig:
    """A TrainConfig from the parsed options of train-like commands (`fixed` overrides)."""
    get = lambda name, default=None: fixed.get(name, getattr(args, name, default))  # noqa: E731
    return TrainConfig(
        backbone=get("backbone"), strategy=get("strategy"), epochs=args.epochs, lr=args.lr,
        unfreeze=get("unfreeze", "all"), cut=get("cut", "auto"), image_size=args.image_size,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        flip=not args.no_flip, augment=not args.no_augment, weights=get("weights"),
        skip_bad=args.skip_bad, max_pixels=args.max_pixels, workers=args.workers,
        precision=args.precision, bn_stats=args.bn_stats, l2sp=get("l2sp", 0.0),
        text_column=args.text_column, label_column=args.label_column, encoding=args.encoding,
        truncate=args.truncate, layers=getattr(args, "layers", 1),
        refit=get("refit", "head"))


def run_train(args) -> int:
    cfg = _config_from_args(args)
    data, test = args.data, None
    if data is None:
        from ..data.shipped import write_animal_mnist
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
        val += (f" ({m['val_images']} examples, of the model selected on the training split; "
                f"the saved model was then trained on all {m['refit_full']['examples']})")
    else:
        val += f" ({m['val_images']} examples)"
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
    _common_train_args(p, pretrain=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from ..pretrain import pretrain
    cfg = _config_from_args(args, backbone=args.arch, strategy="scratch")
    result = pretrain(args.data, args.out, arch=args.arch, config=cfg,
                      sample_size=args.sample_size, overwrite=args.overwrite,
                      restart=args.restart, progress=not args.quiet)
    if result.run_dir is None:
        return 0
    m = result.metrics
    print(f"done in {m['seconds']:.0f}s: held-out accuracy {m['val_accuracy']:.4f} "
          f"({m['val_images']} examples); source model saved to {result.run_dir}")
    print(f"transfer from it with: headstart train TARGET --backbone {result.run_dir} --out RUN")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="measure a trained run on labelled data")
    p.add_argument("run")
    p.add_argument("data", help="labelled data in the form the run was trained on")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--plot", help="confusion-matrix PNG path (default RUN/confusion_<data>.png)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    trained = api.load(args.run)
    report, skipped = api.evaluate(trained, args.data, skip_bad=args.skip_bad,
                                   progress=not args.json and sys.stderr.isatty())
    plot = Path(args.plot) if args.plot else Path(args.run) / \
        f"confusion_{Path(args.data).name or 'data'}.png"
    plot_confusion(report, plot, title=f"{Path(args.run).name} on {Path(args.data).name}")
    if args.json:
        print(json.dumps({**report, "skipped": skipped, "confusion_png": str(plot)}))
        return 0
    api.report_skipped(skipped, print)
    print(format_report(report))
    print()
    print(format_confusion(report))
    print(f"\nconfusion matrix plot: {plot}")
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
    from ..data.shipped import write_animal_mnist, write_bbc_news
    if args.name in ("bbc-news", "bbc-headlines"):
        heads = args.name == "bbc-headlines"
        root = write_bbc_news(args.out, per_class=args.per_class, seed=args.seed, headlines=heads)
        held = "678-headline" if heads else "700-article"
        print(f"wrote {root}/train (training pool) and {root}/test ({held} hold-out)")
        return 0
    root = write_animal_mnist(args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {root}/train (training pool) and {root}/test (2,000-image hold-out)")
    return 0


def _texts_to_predict(args: list[str], cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """Texts from the command line: a .txt file is one text, a table gives its text column,
    anything else is the text itself. Returns (texts, names to show)."""
    from ..data.texts import TABLE_EXTENSIONS, TextOptions, check_not_empty, decode, from_table
    texts, names = [], []
    for a in args:
        path = Path(a)
        is_file = len(a) < 4096 and "\n" not in a and path.is_file()
        if is_file and path.suffix.lower() in TABLE_EXTENSIONS:
            ds = from_table(path, TextOptions(cfg.text_column, None, cfg.encoding),
                            need_labels=False)
            texts += ds.sources
            names += ds.describe_sources()
        elif is_file:
            texts.append(decode(path.read_bytes(), a, cfg.encoding))
            names.append(a)
        else:
            texts.append(a)
            names.append(a if len(a) <= 60 else a[:57] + "...")
    check_not_empty(texts, names)
    return texts, names

