"""`headstart compare`: does transfer help on this data, and by how much?

On one split (a given test set, or a stratified seeded hold-out no arm trains on) four arms
learn from the same training examples: `probe` (frozen pre-trained features + linear head),
`transfer` (the user's strategy, `headstart train`'s default unless given) and `scratch`
(same architecture, random weights), with the same budget of gradient epochs, and `classic`
(a logistic regression on pixels, HOG or TF-IDF, evaluation/classic.py: seconds). Each seed
draws the same training / validation split for every arm. Each is scored on the test part;
the report (built in compare_report.py, written by evaluation/report.py) holds the three
indicators, the verdict against the best model without transfer, per-class drops,
confusions, compute and the label curve. Under torchrun the arms train and score across the
processes, as `train` does; rank 0 alone logs and writes the report.
"""
from __future__ import annotations

import gc
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import api, modalities
from .backbones import get_config
from .compare_report import ARMS, NEURAL, build_report
from .data import duplicates
from .data.datasets import stratified_split
from .evaluation import indicators as ind
from .evaluation.classic import fit_classic
from .evaluation.report import write_report
from .evaluation.zero_shot import zero_shot
from .exceptions import ConfigError, DataError, HeadstartError
from .strategies import EPOCHS, STRATEGIES
from .training import FeatureCache, TrainConfig
from .training import distributed as dist
from .training.model import resolve_backbone
from .training.rundir import check_out_apart, check_replaceable
from .training.predict import predict_logits, softmax
from .training.sizing import choose_input

TRAIN_LINES = ("phase", "early stop", "drift from", "source task")  # api.train's lines shown


def compare(data, out=None, *, labels=None, config: TrainConfig | None = None, test=None,
            test_fraction: float = 0.25, seeds: int = 1, target: float | None = None,
            label_curve=None, overwrite: bool = False, progress: bool = True,
            log=print) -> dict:
    """Train probe, transfer, scratch and the classic model on the same split (and the first
    three on the same budget); return the report dict and, with `out`, write out/report.json
    and out/report.html (all or nothing)."""
    started = time.perf_counter()
    dist.init_from_env()  # under torchrun every pass over data and every gradient phase is
    # shared by the processes (as in `train`); rank 0 alone talks and writes the report
    log = log if log and dist.is_main() else (lambda *_: None)
    progress = progress and dist.is_main()
    cfg = _check_options(config, test=test, test_fraction=test_fraction, seeds=seeds,
                         target=target)
    out = None if out is None else Path(out)
    if out is not None:  # replaces only a previous headstart output, never the data
        check_out_apart(out, data)
        check_replaceable(out, overwrite=overwrite)
    pool, test_ds, source = _split(data, labels, test, test_fraction, cfg)
    shots = parse_label_curve(label_curve, pool)
    y = np.array([pool.classes.index(v) for v in test_ds.labels], np.int64)
    log(f"compare: {len(pool)} {pool.unit} to train on, {len(y)} to test on ({source})")
    copies = _copies_in_test(pool, test_ds, log)
    cache = FeatureCache()
    try:
        _resolve_input(cfg, pool, cache, progress, log)
        runs, zero = _train_arms(pool, test_ds, y, cfg, seeds, cache, progress, log)
        report = build_report(runs, zero, y, pool, cfg, target=target, test_source=source,
                              test_ds=test_ds)
        if shots:
            report["label_curve"] = _label_curve(shots, pool, test_ds, y, cfg, cache,
                                                 progress, log,
                                                 baseline=report["verdict"]["baseline"])
    finally:
        cache.close()
    report["copies_of_training"] = copies
    report["seconds"] = round(time.perf_counter() - started, 1)
    distributed = dist.describe()
    if distributed:
        report["distributed"] = distributed
    if out is not None:
        report["out"] = str(out)
        if dist.is_main():
            commit_report(report, out, overwrite=overwrite)
        dist.barrier()  # every process ends once the report is written
    return report


def _copies_in_test(pool, test_ds, log) -> dict:
    """Test examples with the content of a training-pool example (data/duplicates.py): every
    arm scores them from memory, so they are counted, and said where there are any."""
    m = modalities.of(pool)

    def key(source) -> str:  # "" for an input that cannot be read (the arms report it)
        try:
            return m.content_key(source)
        except HeadstartError:
            return ""
    keys = [key(s) for s in test_ds.sources]
    seen = duplicates.summary(duplicates.copies_of(keys, {key(s) for s in pool.sources}), keys,
                              test_ds.describe_sources())
    if seen["count"]:
        seen["text"] = (
            f"{seen['count']} of the {seen['of']} test {pool.unit} "
            f"{duplicates.copies(seen['count'])} {pool.unit} the arms train on (e.g. "
            f"{', '.join(seen['examples'])}): every arm's test accuracy is optimistic, most for "
            "the arms that memorise; remove the copies, or give a test set (--test) of "
            f"{pool.unit} the data does not hold")
        log(f"warning: {seen['text']}")
    return seen


# -- options and data ----------------------------------------------------------------------
def _check_options(config, *, test, test_fraction, seeds, target) -> TrainConfig:
    cfg = replace(config or TrainConfig()).validate()
    if cfg.strategy not in STRATEGIES or cfg.strategy == "scratch":
        raise ConfigError(f"strategy {cfg.strategy!r} cannot be the transfer arm (scratch is "
                          "the baseline); pick "
                          + ", ".join(s for s in STRATEGIES if s != "scratch"))
    if cfg.epochs is None:  # every arm the same budget: the default gradient epochs
        cfg.epochs = EPOCHS
    if not (isinstance(cfg.epochs, int) and cfg.epochs >= 1):
        raise ConfigError(f"epochs must be a whole number >= 1, got {cfg.epochs!r}")
    if not cfg.val_fraction > 0:
        raise ConfigError(f"val_fraction {cfg.val_fraction}: compare needs a validation split "
                          "to time the arms; use a fraction such as 0.2")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number >= 1, got {seeds!r}")
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError(f"target {target!r} is not a validation accuracy in (0, 1]; write "
                          "e.g. 0.8 for 80%")
    if test is None and not (isinstance(test_fraction, (int, float)) and
                             0 < test_fraction < 1):
        raise ConfigError(f"test_fraction {test_fraction!r} must be between 0 and 1 "
                          "(exclusive), e.g. 0.25; or give a test set")
    return cfg


def _split(data, labels, test, test_fraction, cfg: TrainConfig):
    """(training pool, test set, description of the test set). The pool is what every arm
    trains and validates on; the test set is never trained on."""
    modality = modalities.detect(data, labels)
    resolve_backbone(cfg, modality)
    ds = modalities.load_dataset(data, labels, skip_bad=cfg.skip_bad, modality=modality,
                                 text_options=cfg.text_options())
    if test is not None:
        test_ds = modalities.load_dataset(test, None, skip_bad=cfg.skip_bad, min_classes=1,
                                          modality=modality, text_options=cfg.text_options())
        unknown = sorted(set(test_ds.labels) - set(ds.classes))
        if unknown:
            raise DataError(f"{test_ds.root}: test classes {', '.join(unknown)} are not among the "
                            f"training classes ({', '.join(ds.classes)}); use the same classes")
        pool, source = ds, f"{test_ds.root}"
    else:
        tr, te = stratified_split(ds.labels, test_fraction, cfg.seed)
        pool, test_ds = ds.subset(tr), ds.subset(te)
        source = f"a stratified {test_fraction:.0%} hold-out of {ds.root} (seed {cfg.seed})"
    few = [f"'{c}' ({n})" for c, n in pool.counts().items() if n < 2]
    if few:
        raise DataError(f"class(es) {', '.join(few)} keep fewer than 2 {pool.unit} to train on "
                        "after the test hold-out; add examples or give a test set (--test)")
    if not len(test_ds):
        raise DataError(f"the test part of {ds.root} is empty; add examples or give --test")
    return pool, test_ds, source


def _resolve_input(cfg: TrainConfig, pool, cache, progress, log) -> None:
    """One input for every arm: the image size and the layer cut (`--cut auto`) are measured
    once, on the pool, by the frozen network's cross-validated probe, and every arm trains the
    network so chosen (scratch: the same architecture from random weights); then `cut` is
    "none" so no arm measures again."""
    bcfg = get_config(cfg.backbone)
    cuts = None if cfg.cut == "auto" and not bcfg.cut_of else ()
    if modalities.of(bcfg).measures_input and (cfg.input_size == "auto" or cuts != ()):
        size, backbone, _, reason = choose_input(pool, cfg, cache=cache, progress=progress,
                                                 cuts=cuts)
        cfg.input_size, cfg.backbone = int(size), backbone
        log(f"input: {backbone} at {size}px ({reason})")
    cfg.cut = "none"


# -- the arms ------------------------------------------------------------------------------
_WHAT = {"classic": "a logistic regression, no network (pixels or HOG, TF-IDF)",
         "probe": "frozen pre-trained features + a linear head",
         "transfer": "strategy {strategy} from the pre-trained weights",
         "scratch": "the same network from random weights"}


def _announce(log, step: int, total: int, arm: str, seed: int, seeds: int, cfg) -> None:
    """Where a long compare is: which arm of which seed starts now (its progress bars and
    epoch lines follow)."""
    log(f"[{step}/{total}] {arm}, seed {seed + 1} of {seeds}: "
        + _WHAT[arm].format(strategy=cfg.strategy))


def _train_arms(pool, test_ds, y, cfg, seeds, cache, progress, log):
    runs: dict[str, list[dict]] = {a: [] for a in ARMS}
    zero = None
    steps = iter(range(1, seeds * len(ARMS) + 1))
    for s in range(seeds):
        _announce(log, next(steps), seeds * len(ARMS), "classic", s, seeds, cfg)
        runs["classic"].append(_classic(pool, test_ds, y, replace(cfg, seed=cfg.seed + s), log,
                                        f"classic seed {s + 1}"))
        for arm in NEURAL:
            _announce(log, next(steps), seeds * len(ARMS), arm, s, seeds, cfg)
            strategy = {"probe": "linear_probe", "scratch": "scratch"}.get(arm, cfg.strategy)
            # the probe's head learns from the training split only, as transfer's does, so a
            # probe above transfer means forgetting, not more data (no refit on validation)
            arm_cfg = replace(cfg, strategy=strategy, seed=cfg.seed + s, refit="none")
            run = _score(pool, test_ds, y, arm_cfg, cache, progress, log, f"{arm} seed {s + 1}")
            if arm == "probe" and s == 0:
                zero = zero_shot(run["trained"], run["features"], y, pool.classes)
            runs[arm].append({k: v for k, v in run.items() if k not in ("trained", "features")})
            # the next arm trains without this one's model held
            del run
            gc.collect()
    return runs, zero


def _score(pool, test_ds, y, cfg, cache, progress, log, tag: str) -> dict:
    """Train one arm on `pool`, predict the test set; its history, metrics and predictions."""
    t0 = time.perf_counter()
    trained = api.train(pool, None, config=cfg, progress=progress,
                        log=lambda m: log(f"  [{tag}] {m}") if m.startswith(TRAIN_LINES) else 0)
    probs, feats = _test_probs(trained, test_ds, cache, progress)
    pred = probs.argmax(1)
    acc = float((pred == y).mean())
    log(f"{tag}: test accuracy {acc:.1%} on {len(y)} examples "
        f"({time.perf_counter() - t0:.0f} s)")
    return {"trained": trained, "features": feats, "pred": pred, "accuracy": acc,
            "history": trained.history, "metrics": trained.metrics, "config": trained.config}


def _classic(pool, test_ds, y, cfg, log, tag: str, *, val: bool = True) -> dict:
    """The classic arm on the training split the neural arms get with this seed (api.train
    splits `pool` with the same stratified_split), validated on its validation split."""
    tr, va = stratified_split(pool.labels, cfg.val_fraction if val else 0.0, cfg.seed)
    train, val_ds = pool.subset(tr), pool.subset(va)
    model = fit_classic(train, seed=cfg.seed, max_pixels=cfg.max_pixels, skip_bad=cfg.skip_bad)
    pred = _predict(model, test_ds, pool.classes, cfg)
    acc = float((pred == y).mean())
    val_acc = _accuracy(model, val_ds, cfg) if len(va) else None
    log(f"{tag}: test accuracy {acc:.1%} on {len(y)} examples ({model.describe()}; "
        f"{model.seconds:.1f} s)")
    row = {"phase": "classic", "epoch": 1, "seconds": round(model.seconds, 3),
           "train_acc": _accuracy(model, train, cfg), "val_acc": val_acc}
    metrics = {"strategy": "classic", "val_accuracy": val_acc, "epochs_run": 0,
               "train_examples": len(tr), "val_examples": len(va), "prepare_seconds": 0.0,
               "seconds": round(model.seconds, 3)}
    return {"pred": pred, "accuracy": acc, "history": [row], "metrics": metrics,
            "model": model.to_dict()}


def _predict(model, ds, classes, cfg) -> np.ndarray:
    """The classic model's predictions as indices of `classes` (the pool's)."""
    own = model.predict(ds.sources, max_pixels=cfg.max_pixels)
    return np.array([classes.index(model.classes[i]) for i in own], np.int64)


def _accuracy(model, ds, cfg) -> float:
    """On the readable examples of `ds` (all of them without --skip-bad)."""
    pred, kept = model.predict_kept(ds.sources, max_pixels=cfg.max_pixels,
                                    skip_bad=cfg.skip_bad)
    y = np.array([model.classes.index(ds.labels[i]) for i in kept])
    return float((pred == y).mean()) if len(y) else 0.0


def _test_probs(trained, test_ds, cache, progress):
    """(probabilities, frozen features or None). A frozen probe's test features come through
    the feature cache and are kept for zero-shot; other arms predict with api.predict_probs."""
    if trained.config.strategy != "linear_probe":
        return api.predict_probs(trained, test_ds.sources, progress=progress), None
    logits, ex = predict_logits(trained.model, test_ds, trained.preprocess,
                                flip=trained.config.flip, progress=progress, cache=cache,
                                batch_size=trained.config.batch_size * 2, return_kept=True)
    return softmax(logits), ex.features


# -- writing -------------------------------------------------------------------------------
def commit_report(report: dict, out, *, overwrite: bool = False) -> Path:
    """Write report.json and report.html into a hidden sibling, then rename it to `out`; on any
    failure or Ctrl-C the partial directory is removed and `out` is untouched."""
    out = Path(out)
    partial = out.parent / f".{out.name}.partial"
    _remove(partial)
    try:
        write_report(report, partial)
        if out.exists():
            check_replaceable(out, overwrite=overwrite)
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            partial.rename(out)
            _remove(trash)
        else:
            partial.rename(out)
    except BaseException:
        _remove(partial)
        raise
    return out


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else \
        path.unlink(missing_ok=True)


# -- label efficiency ----------------------------------------------------------------------
def parse_label_curve(spec, pool) -> list[tuple[str, int | None]]:
    """[(tick label, examples per class or None for all)] from "1,2,5,all" (or a list)."""
    if spec is None or len(spec) == 0:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    points, shown = [], ",".join(str(x) for x in items)
    for raw in items:
        tok = str(raw).strip().lower()
        if tok == "all":
            points.append(("all", None))
        elif tok.isdigit() and int(tok) > 0:
            points.append((tok, int(tok)))
        else:
            raise ConfigError(f"label curve '{shown}': {str(raw).strip()!r} is not a number of "
                              "examples per class (>= 1) or 'all'; write e.g. 1,2,5,10,all")
    ks = [k for _, k in points if k is not None]
    if ks != sorted(set(ks)) or ("all", None) in points[:-1] or len(points) < 2:
        raise ConfigError(f"label curve '{shown}' needs two or more increasing counts, 'all' "
                          "only last; write e.g. 1,2,5,10,all")
    smallest, cls = min((n, c) for c, n in pool.counts().items())
    if ks and ks[-1] > smallest:
        raise ConfigError(f"label curve asks for {ks[-1]} examples per class but class '{cls}' "
                          f"has only {smallest} to train on; use at most {smallest}, or 'all'")
    if points[-1][1] is None and ks and len(pool) / len(pool.classes) <= ks[-1]:
        points.pop()  # 'all' is the last count already (balanced data)
    return points


def _label_curve(points, pool, test_ds, y, cfg, cache, progress, log, *,
                 baseline: str) -> dict:
    """Transfer, scratch and the classic model trained on nested subsets of k examples per
    class (no validation split: every example trains, for the full epoch budget), scored on
    the same test set."""
    rng = np.random.default_rng(cfg.seed)
    order = {c: rng.permutation([i for i, v in enumerate(pool.labels) if v == c]).tolist()
             for c in pool.classes}
    shots, acc = [], {"transfer": [], "scratch": [], "classic": []}
    for n, (label, k) in enumerate(points, 1):
        idx = sorted(i for ids in order.values() for i in (ids if k is None else ids[:k]))
        shots.append(k if k is not None else round(len(idx) / len(order), 2))
        log(f"[label curve {n}/{len(points)}] {label} per class ({len(idx)} {pool.unit}): "
            "transfer, scratch, classic")
        for arm, strategy in (("transfer", cfg.strategy), ("scratch", "scratch")):
            c = replace(cfg, strategy=strategy, val_fraction=0.0)
            run = _score(pool.subset(idx), test_ds, y, c, cache, progress, log,
                         f"label curve {label}/class {arm}")
            acc[arm].append(run["accuracy"])
        run = _classic(pool.subset(idx), test_ds, y, cfg, log, f"label curve {label}/class "
                       "classic", val=False)
        acc["classic"].append(run["accuracy"])
    note = (f"Each point trains transfer ({cfg.strategy}), scratch and the classic model on the "
            "first k examples per class of one seeded order (nested subsets), with no "
            f"validation split and no early stopping ({cfg.epochs} gradient epochs), first seed "
            f"only; all points are scored on the same {len(y)} test examples.")
    by_arm = {a: ind.label_efficiency(shots, acc["transfer"], acc[a], name=_CURVE_NAMES[a])
              for a in ("scratch", "classic")}
    return {"shots": shots, "labels": [label for label, _ in points], **acc,
            "reference": baseline, **by_arm[baseline], "by_arm": by_arm, "note": note,
            "epochs": cfg.epochs, "n_test": len(y)}


_CURVE_NAMES = {"scratch": "scratch", "classic": "the classic model"}
