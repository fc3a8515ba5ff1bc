"""`headstart compare`: does transfer help on this data, and by how much?

On one split (a given test set, or a stratified seeded hold-out no arm trains on) three arms
train with the same budget of gradient epochs: `probe` (frozen pre-trained features + linear
head), `transfer` (the user's strategy, fine_tune by default) and `scratch` (same architecture,
random weights). Each is scored on the test part; the report (evaluation/report.py) holds the
three indicators, the verdict, per-class drops, confusions, compute and the label curve.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import api, modalities
from .backbones import count_flops, create_backbone, get_config
from .data.datasets import stratified_split
from .evaluation import indicators as ind
from .evaluation.metrics import confusion_matrix
from .evaluation.report import write_report
from .evaluation.zero_shot import zero_shot
from .exceptions import ConfigError, DataError
from .strategies import build_plan
from .strategies import STRATEGIES
from .training import FeatureCache, TrainConfig
from .training.model import preprocess_for, resolve_backbone
from .training.rundir import check_out_apart, check_replaceable
from .training.predict import predict_logits, softmax
from .training.sizing import choose_image_size

ARMS = ("probe", "transfer", "scratch")
MIN_DROP = 0.05  # per-class drops listed from 5 points
TRAIN_LINES = ("phase", "early stop", "drift from", "source task")  # api.train's lines shown
TIME_NOTE = ("Seconds are wall time. Each arm's preparation before its first epoch (feature "
             "extraction for the probe and transfer arms, reading and checking the inputs for "
             "scratch) is added to its first epoch, so transfer's head start is not free; "
             "probe and transfer share one feature cache, so both are charged the larger of "
             "their two extraction times (features cached by an earlier run are not charged).")


def compare(data, out=None, *, labels=None, config: TrainConfig | None = None, test=None,
            test_fraction: float = 0.25, seeds: int = 1, target: float | None = None,
            label_curve=None, overwrite: bool = False, progress: bool = True,
            log=print) -> dict:
    """Train probe, transfer and scratch on the same split and budget; return the report dict
    and, with `out`, write out/report.json and out/report.html (all or nothing)."""
    started = time.perf_counter()
    log = log or (lambda *_: None)
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
    cache = FeatureCache()
    try:
        _resolve_size(cfg, pool, cache, progress, log)
        runs, zero = _train_arms(pool, test_ds, y, cfg, seeds, cache, progress, log)
        report = build_report(runs, zero, y, pool, cfg, target=target, test_source=source,
                              test_ds=test_ds)
        if shots:
            report["label_curve"] = _label_curve(shots, pool, test_ds, y, cfg, cache,
                                                 progress, log)
    finally:
        cache.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        report["out"] = str(out)
        commit_report(report, out, overwrite=overwrite)
    return report


# -- options and data ----------------------------------------------------------------------
def _check_options(config, *, test, test_fraction, seeds, target) -> TrainConfig:
    cfg = replace(config or TrainConfig()).validate()
    if cfg.strategy not in STRATEGIES or cfg.strategy == "scratch":
        raise ConfigError(f"strategy {cfg.strategy!r} cannot be the transfer arm (scratch is "
                          "the baseline); pick fine_tune, gradual, contrastive or linear_probe")
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


def _resolve_size(cfg: TrainConfig, pool, cache, progress, log) -> None:
    """One image size for every arm: measured once (indicator-neutral) when 'auto'."""
    if cfg.input_size != "auto":
        return
    size, _, reason = choose_image_size(pool, cfg, cache=cache, progress=progress)
    cfg.input_size = int(size)
    log(f"image size: {size}px ({reason})")


# -- the arms ------------------------------------------------------------------------------
def _train_arms(pool, test_ds, y, cfg, seeds, cache, progress, log):
    runs: dict[str, list[dict]] = {a: [] for a in ARMS}
    zero = None
    for s in range(seeds):
        for arm in ARMS:
            strategy = {"probe": "linear_probe", "scratch": "scratch"}.get(arm, cfg.strategy)
            # the probe's head learns from the training split only, as transfer's does, so a
            # probe above transfer means forgetting, not more data (no refit on validation)
            arm_cfg = replace(cfg, strategy=strategy, seed=cfg.seed + s, refit="none")
            run = _score(pool, test_ds, y, arm_cfg, cache, progress, log, f"{arm} seed {s + 1}")
            if arm == "probe" and s == 0:
                zero = zero_shot(run["trained"], run["features"], y, pool.classes)
            runs[arm].append({k: v for k, v in run.items() if k not in ("trained", "features")})
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


def _test_probs(trained, test_ds, cache, progress):
    """(probabilities, frozen features or None). A frozen probe's test features come through
    the feature cache and are kept for zero-shot; other arms predict with api.predict_probs."""
    if trained.config.strategy != "linear_probe":
        return api.predict_probs(trained, test_ds.sources, progress=progress), None
    logits, ex = predict_logits(trained.model, test_ds, trained.preprocess,
                                flip=trained.config.flip, progress=progress, cache=cache,
                                batch_size=trained.config.batch_size * 2, return_kept=True)
    return softmax(logits), ex.features


# -- the report ----------------------------------------------------------------------------
def build_report(runs, zero, y, pool, cfg, *, target, test_source, test_ds) -> dict:
    k, classes = len(pool.classes), pool.classes
    target, rule = (target, "given by the user") if target else _default_target(runs, k)
    _charge_preparation(runs)
    flops, unit = _flops_per_input(cfg, pool)
    arms = {a: _arm_entry(runs[a], y, k, target, flops) for a in ARMS}
    preds = {a: [r["pred"] for r in runs[a]] for a in ARMS}
    accs = {a: [r["accuracy"] for r in runs[a]] for a in ARMS}
    diff = ind.paired_difference(y, preds["transfer"][0], preds["scratch"][0],
                                 seed_accs_a=accs["transfer"], seed_accs_b=accs["scratch"])
    pdiff = ind.paired_difference(y, preds["transfer"][0], preds["probe"][0],
                                  seed_accs_a=accs["transfer"], seed_accs_b=accs["probe"])
    root = Path(str(pool.root))
    name = f"{root.parent.name}/{root.name}" if root.name.lower() in ("train", "training") \
        else root.name or str(root)
    size_key = modalities.of(pool).size_name
    seeds = len(runs["probe"])
    return {
        "title": f"Transfer vs scratch: {name}", "data": str(pool.root), "backbone": cfg.backbone,
        "modality": pool.modality, "classes": classes,
        "test": {"source": test_source, "n": int(len(y))},
        "budget": {"strategy": cfg.strategy, "epochs": cfg.epochs, size_key: cfg.input_size,
                   "seeds": seeds, "val_fraction": cfg.val_fraction,
                   "train_pool": len(pool)},
        "target": {"accuracy": target, "rule": rule}, "time_note": TIME_NOTE,
        "verdict": ind.verdict(diff, probe_vs_transfer_ci=pdiff), "arms": arms,
        "difference": diff, "probe_difference": pdiff,
        "speedup": ind.speedup(arms["transfer"]["time_to_target"],
                               arms["scratch"]["time_to_target"]),
        "class_drops": [_drops(y, preds, ref, classes) for ref in ("scratch", "probe")],
        "zero_shot": zero,
        "confusion_note": f"Counts over the {len(y)} test examples" + (
            f", summed over {seeds} seeds." if seeds > 1 else "."),
        "compute_assumptions": _compute_note(flops, unit, cfg),
        "predictions": {"sources": test_ds.describe_sources(), "y": y.tolist(),
                        **{a: [p.tolist() for p in preds[a]] for a in ARMS}},
    }


def _arm_entry(runs: list[dict], y, k: int, target: float, flops: float) -> dict:
    first = runs[0]
    accs = [r["accuracy"] for r in runs]
    acc, lo, hi = ind.accuracy_ci(y, first["pred"], seed_accs=accs)
    histories = [_timed(r) for r in runs]
    return {"strategy": first["config"].strategy, "accuracy": acc, "ci": [lo, hi],
            "seed_accuracies": accs, "history": histories[0],
            "time_to_target": ind.time_to_target(histories[0], target),
            "seed_time_to_target": [ind.time_to_target(h, target) for h in histories],
            "epochs_run": first["metrics"]["epochs_run"],
            "prepare_seconds": first["prep"],
            "train_examples": first["metrics"]["train_examples"],
            "val_examples": first["metrics"]["val_examples"],
            "compute": _compute(first, flops),
            "forgetting": first["metrics"].get("forgetting"),
            "confusion": sum(confusion_matrix(y, r["pred"], k) for r in runs)}


def _default_target(runs, k: int) -> tuple[float, str]:
    """95% of scratch's best validation accuracy (first seed); when that is within noise of
    chance (1/k + 2 standard errors on the validation set) it would be reached by guessing,
    so 95% of transfer's best instead."""
    best = {a: max((r.get("val_acc") or 0.0) for r in runs[a][0]["history"]) for a in ARMS}
    n_val = max(1, runs["scratch"][0]["metrics"]["val_examples"])
    chance = 1.0 / k
    if best["scratch"] > chance + 2 * (chance * (1 - chance) / n_val) ** 0.5:
        return ind.default_target(best["scratch"]), (
            f"95% of scratch's best validation accuracy ({best['scratch']:.1%}, first seed)")
    return ind.default_target(best["transfer"]), (
        f"95% of transfer's best validation accuracy ({best['transfer']:.1%}, first seed): "
        f"scratch's best, {best['scratch']:.1%}, is within noise of chance ({chance:.1%})")


def _charge_preparation(runs) -> None:
    """Probe and transfer extract the same frozen features and the feature cache lets the
    second reuse the first's, so both are charged the larger preparation time."""
    for s in range(len(runs["probe"])):
        shared = max(runs[a][s]["metrics"]["prepare_seconds"] for a in ("probe", "transfer"))
        for a in ARMS:
            runs[a][s]["prep"] = runs[a][s]["metrics"]["prepare_seconds"] \
                if a == "scratch" else shared


def _timed(run: dict) -> list[dict]:
    """The history with the preparation time added to the first row (see TIME_NOTE)."""
    rows = [dict(r) for r in run["history"]]
    if rows:
        rows[0]["seconds"] = round(float(rows[0]["seconds"]) + run["prep"], 3)
        rows[0]["prepare_seconds"] = run["prep"]
    return rows


def _drops(y, preds, reference: str, classes) -> dict:
    """Per-class drops of transfer against `reference`, pooled over seeds."""
    seeds = len(preds["transfer"])
    rows = ind.per_class_drops(np.tile(y, seeds), np.concatenate(preds["transfer"]),
                               np.concatenate(preds[reference]), classes, min_drop=MIN_DROP)
    for r in rows:
        r["n"] //= seeds
    out = {"reference": reference, "min_drop": MIN_DROP, "rows": rows}
    counts = np.bincount(np.concatenate(preds[reference]), minlength=len(classes))
    if counts.max() > 0.5 * counts.sum():  # a collapsed reference "wins" its favourite class
        out["note"] = (f"{reference} predicts '{classes[int(counts.argmax())]}' for "
                       f"{counts.max() / counts.sum():.0%} of test examples: its accuracy on "
                       "that class is no skill.")
    return out


# -- compute -------------------------------------------------------------------------------
def _flops_per_input(cfg: TrainConfig, pool) -> tuple[float, str]:
    size = int(cfg.input_size)
    flops = float(count_flops(create_backbone(cfg.backbone, pretrained=False, input_size=size),
                              size))
    return modalities.of(pool).flops_unit(preprocess_for(cfg), pool.sources, flops)


def _compute(run: dict, flops: float) -> dict:
    """FLOPs of one training run: forward = feature extraction (cached phases) + a validation
    pass per gradient epoch + the final one; back-propagated = training inputs x epochs."""
    cfg, m, hist = run["config"], run["metrics"], run["history"]
    bcfg = get_config(cfg.backbone)
    plan = build_plan(cfg.strategy, bcfg.layer_groups, epochs=cfg.epochs, lr=cfg.lr,
                      unfreeze=cfg.unfreeze, modality=bcfg.modality)
    cached = {p.name for p in plan.phases if p.cached}
    views = 2 if cfg.flip else 1
    n_tr, n_va = m["train_examples"], m["val_examples"]
    grad = sum(r["phase"] not in cached for r in hist)
    forward = (n_tr + n_va) * views if any(r["phase"] in cached for r in hist) else 0
    forward += n_va * views * (grad + 1 if grad else 0)
    seconds = float(m["seconds"]) - m["prepare_seconds"] + run["prep"]  # shared extraction
    return ind.compute_estimate(flops_per_input=flops, forward_inputs=forward,
                                backward_inputs=n_tr * grad, seconds=seconds)


def _compute_note(flops: float, unit: str, cfg: TrainConfig) -> str:
    views = " x 2 flip views" if cfg.flip else ""
    return (f"One training run per arm (the first seed); {flops / 1e9:.3g} GFLOPs per input "
            f"({unit}). Forward-only inputs = feature extraction of the training and validation "
            f"examples{views} (arms with a cached head phase) + a validation pass per gradient "
            "epoch and a final one; back-propagated inputs = training examples x gradient epochs "
            "run; FLOPs = per input x (forward + 3 x back-propagated). Test scoring is not "
            "counted (the same for every arm). Energy = wall time (feature extraction charged "
            f"to both arms that use it) x {ind.CPU_WATTS:g} W CPU package power (memory, power "
            f"supply, cooling not counted); CO2 = energy x {ind.GRID_G_PER_KWH:g} g/kWh (IEA "
            "2019 world average).")


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


def _label_curve(points, pool, test_ds, y, cfg, cache, progress, log) -> dict:
    """Transfer and scratch trained on nested subsets of k examples per class (no validation
    split: every example trains, for the full epoch budget), scored on the same test set."""
    rng = np.random.default_rng(cfg.seed)
    order = {c: rng.permutation([i for i, v in enumerate(pool.labels) if v == c]).tolist()
             for c in pool.classes}
    shots, acc = [], {"transfer": [], "scratch": []}
    for label, k in points:
        idx = sorted(i for ids in order.values() for i in (ids if k is None else ids[:k]))
        shots.append(k if k is not None else round(len(idx) / len(order), 2))
        for arm, strategy in (("transfer", cfg.strategy), ("scratch", "scratch")):
            c = replace(cfg, strategy=strategy, val_fraction=0.0)
            run = _score(pool.subset(idx), test_ds, y, c, cache, progress, log,
                         f"label curve {label}/class {arm}")
            acc[arm].append(run["accuracy"])
    note = (f"Each point trains transfer ({cfg.strategy}) and scratch on the first k examples "
            "per class of one seeded order (nested subsets), with no validation split and no "
            f"early stopping ({cfg.epochs} gradient epochs), first seed only; all points are "
            f"scored on the same {len(y)} test examples.")
    return {"shots": shots, "labels": [label for label, _ in points], **acc,
            **ind.label_efficiency(shots, acc["transfer"], acc["scratch"]), "note": note}
