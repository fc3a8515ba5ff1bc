"""The classic split experiment ("apples first, then pears"), on the real animal-mnist images:

1. pre-train small_cnn from scratch on ALL images of classes 0-4 (bear, bird, cat, cow, dog);
2. transfer it to classes 5-9 (elephant, giraffe, horse, sheep, zebra) with 10 labelled images
   per class, and train the same architecture from scratch on those 50 images, same budget;
3. measure both on the held-out test images of classes 5-9 (200 per class, never trained on),
   and the source-task retention (source head on held-out source images) after fine-tuning with
   and without L2-SP.

    python benchmarks/pretrain_split.py --seeds 0 1 2   # about 15 minutes on 2 idle cores
    python benchmarks/pretrain_split.py --defaults      # as a user runs it (below)

Fine-tuning runs train on all 50 images for a fixed number of epochs (no validation split, no
early stopping), so every arm gets the same data and budget and retention is measured on the
weights fine-tuning actually produced. Scratch is also given a 5x longer budget, to show
whether its gap is one of time (indicator 2) or of final accuracy (indicator 3).

--defaults runs the experiment as a user would, with every setting at its default: the
source made by `pretrain(SOURCE, OUT, arch="small_cnn")` (the architecture's native input
size, its default epochs, early stopping on its held-out part), then the target trained from
it with only the backbone and the strategy given (a validation split, early stopping, the mix
validation prefers): linear_probe, fine_tune and the default (auto), beside scratch. It
prints, per seed, whether fine-tuning from your own source beat its probe on the test.

--target digits transfers to scikit-learn's handwritten digits instead (8 x 8, upscaled by
the pipeline; a target far from silhouettes of animals): 50 per class held out as its test.

--dev N judges the target arms on N images per class drawn from the rest of the target
classes' training pool (never the test), so that a rule can be chosen without looking at the
test. With it, one more arm: fine_tune on all the labelled images without validation (no early
stopping and no mix: the tuned end), which shows what the mix rule's choice gives up; and each
run's mix table (validation accuracy per mix) is printed.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from pathlib import Path

import _common  # noqa: F401  (puts src/ on the path)

from headstart import api
from headstart.data.shipped import ANIMAL_CLASSES, write_animal_mnist
from headstart.pretrain import pretrain
from headstart.training import TrainConfig

SOURCE, TARGET = ANIMAL_CLASSES[:5], ANIMAL_CLASSES[5:]
QUIET = dict(progress=False, log=lambda *_: None)


def folders(work: Path, seed: int, per_class: int) -> tuple[Path, Path, Path]:
    """(source data, target train, target test) folders built from the shipped hold-out split."""
    full = write_animal_mnist(work / "animal-mnist")
    few = write_animal_mnist(work / f"animal-mnist-{per_class}-{seed}", per_class=per_class,
                             seed=seed)
    src, tgt, test = (work / "source", work / f"target-{per_class}-{seed}",
                      work / "target-test")
    for c in SOURCE:  # all their images: training pool and hold-out alike
        if not (src / c).exists():
            shutil.copytree(full / "train" / c, src / c)
            shutil.copytree(full / "test" / c, src / c, dirs_exist_ok=True)
    for c in TARGET:
        if not (tgt / c).exists():
            shutil.copytree(few / "train" / c, tgt / c)
        if not (test / c).exists():
            shutil.copytree(full / "test" / c, test / c)
    return src, tgt, test


def dev_folder(work: Path, seed: int, per_class: int, tgt: Path) -> Path:
    """`per_class` images of each target class from the training pool that `tgt` was not
    sampled from: a dev split that is never the test."""
    full = write_animal_mnist(work / "animal-mnist")
    dev = tgt.with_name(f"{tgt.name}-dev{per_class}")
    if dev.is_dir():
        return dev
    rng = random.Random(f"dev-{seed}")
    partial = dev.with_name(dev.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for c in TARGET:
        used = {f.name for f in (tgt / c).iterdir()}
        rest = sorted(f for f in (full / "train" / c).iterdir() if f.name not in used)
        (partial / c).mkdir(parents=True)
        for f in rng.sample(rest, min(per_class, len(rest))):
            shutil.copy(f, partial / c / f.name)
    partial.rename(dev)
    return dev


DIGITS_TEST = 50  # held-out digits per class: the far target's test, never sampled from


def digits_folders(work: Path, seed: int, per_class: int, dev: int) -> tuple[Path, Path]:
    """(train, test or dev) folders of scikit-learn's 8 x 8 handwritten digits (about 180 a
    class), a target far from silhouettes of animals: DIGITS_TEST per class held out by a
    fixed draw, `per_class` sampled from the rest by `seed`, and with `dev` that many of the
    rest after the sample (never the test)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    pixels = (d.images / 16 * 255).astype(np.uint8)
    root = work / f"digits-{per_class}-{seed}-dev{dev}"
    tgt, judge = root / "train", root / ("dev" if dev else "test")
    if (root / ".complete").is_file():
        return tgt, judge
    shutil.rmtree(root, ignore_errors=True)
    for c in range(10):
        idx = np.random.default_rng(12345).permutation(np.flatnonzero(d.target == c))
        test, pool = idx[:DIGITS_TEST], np.random.default_rng(seed).permutation(idx[DIGITS_TEST:])
        for part, chosen in ((tgt, pool[:per_class]),
                             (judge, pool[per_class:per_class + dev] if dev else test)):
            (part / str(c)).mkdir(parents=True)
            for i in chosen:
                Image.fromarray(pixels[i]).save(part / str(c) / f"{i:04d}.png")
    (root / ".complete").touch()
    return tgt, judge


def arm(tgt: Path, test: Path, cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    r = api.train(tgt, config=cfg, **QUIET)
    report, _ = api.evaluate(r, test, progress=False)
    ret = (r.metrics.get("forgetting") or {}).get("retention") or {}
    return {"acc": report["accuracy"], "retention": ret.get("source_accuracy_after"),
            "before": ret.get("source_accuracy_before"), "seconds": time.perf_counter() - t0,
            "mix": r.metrics.get("mix")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20, help="fine-tune and scratch budget")
    p.add_argument("--scratch-epochs", type=int, nargs="*", default=[100],
                   help="extra, larger scratch budgets: does scratch catch up given more time?")
    p.add_argument("--l2sp", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--work", default="benchmark-work/pretrain-split")
    p.add_argument("--dev", type=int, default=0, metavar="N",
                   help="with --defaults: judge on N images per class from the rest of the "
                        "target's training pool instead of the test")
    p.add_argument("--target", choices=("animals", "digits"), default="animals",
                   help="with --defaults: the target, the five other animals (near) or "
                        "scikit-learn's handwritten digits (far; trained without flips)")
    p.add_argument("--defaults", action="store_true",
                   help="every setting at its default, as a user runs pretrain and train")
    args = p.parse_args()
    work = Path(args.work)
    if args.defaults:
        return user_defaults(work, args)
    src_data, _, _ = folders(work, args.seeds[0], args.per_class)
    source = work / "source-model"
    if not source.exists():
        t0 = time.perf_counter()
        pretrain(src_data, source, arch="small_cnn", config=TrainConfig(
            epochs=args.pretrain_epochs, input_size=32), **QUIET)
        print(f"pre-trained small_cnn on {len(list(src_data.rglob('*.png')))} images of "
              f"{', '.join(SOURCE)} in {time.perf_counter() - t0:.0f}s")
    common = dict(epochs=args.epochs, val_fraction=0.0, input_size=32)
    arms = {"scratch": dict(backbone="small_cnn", strategy="scratch"),
            **{f"scratch, {e} epochs": dict(backbone="small_cnn", strategy="scratch", epochs=e)
               for e in args.scratch_epochs},
            "transfer probe": dict(backbone=str(source), strategy="linear_probe"),
            "transfer fine_tune": dict(backbone=str(source), strategy="fine_tune")}
    arms.update({f"fine_tune + L2-SP {a:g}": dict(backbone=str(source), strategy="fine_tune",
                                                 l2sp=a) for a in args.l2sp})
    results: dict[str, list[dict]] = {k: [] for k in arms}
    for seed in args.seeds:
        _, tgt, test = folders(work, seed, args.per_class)
        for name, kw in arms.items():
            results[name].append(arm(tgt, test, TrainConfig(seed=seed, **{**common, **kw})))
            r = results[name][-1]
            kept = "-" if r["retention"] is None else f"{r['retention']:.4f}"
            print(f"seed {seed} {name:<26} test {r['acc']:.4f}  source accuracy after {kept}",
                  flush=True)
    report(results, args)


def user_defaults(work: Path, args) -> None:
    """The source from `pretrain` with its defaults; the target arms with theirs."""
    src_data, _, _ = folders(work, args.seeds[0], args.per_class)
    source = work / "source-model-defaults"
    if not source.exists():
        t0 = time.perf_counter()
        r = pretrain(src_data, source, arch="small_cnn", **QUIET)
        print(f"pretrain(arch='small_cnn') with its defaults: {r.config.input_size}px, "
              f"{r.metrics['epochs_run']} epochs, held-out source accuracy "
              f"{r.metrics['val_accuracy']:.4f}, {time.perf_counter() - t0:.0f}s")
    arms = {"scratch": dict(backbone="small_cnn", strategy="scratch"),
            "transfer probe": dict(backbone=str(source), strategy="linear_probe"),
            "transfer fine_tune": dict(backbone=str(source), strategy="fine_tune"),
            "transfer default": dict(backbone=str(source))}
    if args.dev:
        arms["fine_tune, no validation"] = dict(backbone=str(source), strategy="fine_tune",
                                                val_fraction=0.0)
    digits = args.target == "digits"
    results: dict[str, list[dict]] = {k: [] for k in arms}
    judged = "1,000 held-out images"
    for seed in args.seeds:
        if digits:
            tgt, test = digits_folders(work, seed, args.per_class, args.dev)
            judged = f"{DIGITS_TEST * 10} held-out digits"
        else:
            _, tgt, test = folders(work, seed, args.per_class)
            if args.dev:
                test = dev_folder(work, seed, args.dev, tgt)
        if args.dev:
            judged = f"dev ({args.dev} per class from the rest of the training pool)"
        for name, kw in arms.items():
            results[name].append(arm(tgt, test, TrainConfig(seed=seed, flip=not digits, **kw)))
            mix = results[name][-1]["mix"]
            if args.dev and mix:
                print(f"  seed {seed} {name}: mix {mix['alpha']:g} of "
                      + ", ".join(f"{r['alpha']:g}: {r['val_acc']:.3f}" for r in mix["mixes"]),
                      flush=True)
        accs = {k: v[-1]["acc"] for k, v in results.items()}
        gain = 100 * (accs["transfer fine_tune"] - accs["transfer probe"])
        print(f"seed {seed}: " + "  ".join(f"{k} {a:.4f}" for k, a in accs.items())
              + f"  fine_tune - probe {gain:+.1f} pt", flush=True)
    what = "digits 0-9" if digits else ", ".join(TARGET)
    print(f"\n{args.per_class} labelled images per class of {what} (default validation "
          f"split); judged on {judged}; {len(args.seeds)} seed(s)")
    print(f"{'arm':<26}{'mean':>8}{'min':>8}{'seconds':>9}")
    for name, rows in results.items():
        accs = [r["acc"] for r in rows]
        print(f"{name:<26}{statistics.mean(accs):>8.4f}{min(accs):>8.4f}"
              f"{statistics.mean(r['seconds'] for r in rows):>9.1f}")
    wins = sum(f["acc"] > p["acc"] for f, p in zip(results["transfer fine_tune"],
                                                  results["transfer probe"]))
    print(f"fine_tune from the source beat its probe on {wins} of {len(args.seeds)} seeds")


def report(results: dict[str, list[dict]], args) -> None:
    mean = lambda rows, k: statistics.mean(r[k] for r in rows)  # noqa: E731
    print(f"\n{args.per_class} labelled images per class of {', '.join(TARGET)}; test = 1,000 "
          f"held-out images; {len(args.seeds)} seed(s); budget {args.epochs} epochs")
    print(f"{'arm':<28}{'test acc':>10}{'source acc after':>18}")
    for name, rows in results.items():
        ret = None if rows[0]["retention"] is None else mean(rows, "retention")
        print(f"{name:<28}{mean(rows, 'acc'):>10.4f}{'' if ret is None else f'{ret:.4f}':>18}")
    base = mean(results["scratch"], "acc")
    best = max((k for k in results if not k.startswith("scratch")),
               key=lambda k: mean(results[k], "acc"))
    print(f"\ntransfer ({best}) minus scratch at the same {args.epochs}-epoch budget: "
          f"{100 * (mean(results[best], 'acc') - base):+.1f} points (target: at least +15)")
    for e in args.scratch_epochs:
        longer = mean(results[f"scratch, {e} epochs"], "acc")
        print(f"  ... minus scratch given {e} epochs: "
              f"{100 * (mean(results[best], 'acc') - longer):+.1f} points")
    before = results["transfer fine_tune"][0]["before"]
    print(f"source accuracy before fine-tuning: {before:.4f}")


if __name__ == "__main__":
    main()
