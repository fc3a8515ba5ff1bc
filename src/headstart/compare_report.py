"""The report dict of `headstart compare`, from the arms' runs: the three indicators, the verdict
against the best model without transfer, per-class drops and the compute estimate. Written
out by evaluation/report.py (report.json + report.html); the runs come from compare.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import modalities
from .backbones import count_flops, create_backbone, get_config
from .evaluation import indicators as ind
from .evaluation import verdict as vd
from .evaluation.metrics import confusion_matrix
from .strategies import build_plan
from .training import TrainConfig
from .training.model import preprocess_for

ARMS = ("probe", "transfer", "scratch", "classic")
NEURAL = ("probe", "transfer", "scratch")
PAIRS = [(a, b) for a in ("transfer", "probe") for b in ("probe", "scratch", "classic") if a != b]
MIN_DROP = 0.05  # per-class drops listed from 5 points
TARGET_FRACTION = 0.95  # the default target: this share of the best validation accuracy
TIME_NOTE = ("Seconds are wall time. Each arm's preparation before its first epoch (feature "
             "extraction for the probe and transfer arms, reading and checking the inputs for "
             "scratch) is added to its first epoch, so transfer's head start is not free; "
             "probe and transfer share one feature cache, so both are charged the larger of "
             "their two extraction times (features cached by an earlier run are not charged). "
             "The classic model has no epochs: its one row is reading the inputs, choosing its "
             "setting by cross-validation and the final fit.")


def build_report(runs, zero, y, pool, cfg, *, target, test_source, test_ds) -> dict:
    k, classes, n = len(pool.classes), pool.classes, len(y)
    chance = vd.chance_level(y.tolist())
    target, rule = (target, {"rule": "given by the user"}) if target else \
        _default_target(runs, k)
    _charge_preparation(runs)
    flops, unit = _flops_per_input(cfg, pool)
    arms = {a: _arm_entry(runs[a], y, k, target, flops if a in NEURAL else None) for a in ARMS}
    preds = {a: [r["pred"] for r in runs[a]] for a in ARMS}
    accs = {a: [r["accuracy"] for r in runs[a]] for a in ARMS}
    diffs = {f"{a}-{b}": ind.paired_difference(y, preds[a][0], preds[b][0], seed_accs_a=accs[a],
                                               seed_accs_b=accs[b]) for a, b in PAIRS}
    native = get_config(cfg.backbone).input_size
    setting = {"strategy": cfg.strategy, "epochs": cfg.epochs, "modality": pool.modality,
               "image_size": int(cfg.input_size), "native_size": native}
    seeds = len(runs["probe"])
    size_key = modalities.of(pool).size_name
    t_arms = {a: arms[a]["time_to_target"] for a in ARMS}
    return {
        "title": f"Transfer vs the best model without it: {_name(pool)}", "data": str(pool.root),
        "backbone": cfg.backbone, "modality": pool.modality, "classes": classes,
        "test": {"source": test_source, "n": int(n), "chance": chance},
        "budget": {"strategy": cfg.strategy, "epochs": cfg.epochs, size_key: cfg.input_size,
                   "seeds": seeds, "val_fraction": cfg.val_fraction, "train_pool": len(pool)},
        "target": {"accuracy": target, **rule}, "time_note": TIME_NOTE,
        "verdict": vd.decide(arms, diffs, chance=chance, n_test=n, setting=setting),
        "arms": arms, "difference": diffs["transfer-scratch"],
        "probe_difference": diffs["transfer-probe"],
        "classic_difference": diffs["transfer-classic"], "differences": diffs,
        "speedup": vd.speedup(t_arms["transfer"], t_arms["scratch"], other="scratch"),
        "speedup_classic": vd.speedup(t_arms["transfer"], t_arms["classic"],
                                      other="the classic model", units=("seconds",)),
        "class_drops": [_drops(y, preds, ref, classes) for ref in ("classic", "scratch",
                                                                   "probe")],
        "zero_shot": zero,
        "confusion_note": f"Counts over the {n} test examples" + (
            f", summed over {seeds} seeds." if seeds > 1 else "."),
        "compute_assumptions": _compute_note(flops, unit, cfg),
        "predictions": {"sources": test_ds.describe_sources(), "y": y.tolist(),
                        **{a: [p.tolist() for p in preds[a]] for a in ARMS}},
    }


def _name(pool) -> str:
    root = Path(str(pool.root))
    return f"{root.parent.name}/{root.name}" if root.name.lower() in ("train", "training") \
        else root.name or str(root)


def _arm_entry(runs: list[dict], y, k: int, target: float, flops: float | None) -> dict:
    first = runs[0]
    accs = [r["accuracy"] for r in runs]
    acc, lo, hi = ind.accuracy_ci(y, first["pred"], seed_accs=accs)
    histories = [_timed(r) for r in runs]
    vals = [r["metrics"].get("val_accuracy") for r in runs]
    entry = {"strategy": first["metrics"]["strategy"], "accuracy": acc, "ci": [lo, hi],
             "seed_accuracies": accs, "val_accuracy": _mean(vals),
             "seed_val_accuracies": vals, "history": histories[0],
             "time_to_target": ind.time_to_target(histories[0], target),
             "seed_time_to_target": [ind.time_to_target(h, target) for h in histories],
             "epochs_run": first["metrics"]["epochs_run"],
             "prepare_seconds": first["prep"],
             "train_examples": first["metrics"]["train_examples"],
             "val_examples": first["metrics"]["val_examples"],
             "confusion": sum(confusion_matrix(y, r["pred"], k) for r in runs)}
    if flops is None:  # the classic arm: its model instead of network compute
        entry["model"] = first["model"]
    else:
        entry["compute"] = _compute(first, flops)
        entry["backbone"] = first["metrics"].get("backbone")  # the same for every neural arm
        entry["forgetting"] = first["metrics"].get("forgetting")
    return entry


def _mean(values):
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def _default_target(runs, k: int) -> tuple[float, dict]:
    """95% of the best validation accuracy without transfer (the classic model's, or scratch's
    best epoch, first seed); when that is within noise of chance (1/k + 2 standard errors on
    the validation set) it would be reached by guessing, so 95% of transfer's best instead."""
    best = {a: max((r.get("val_acc") or 0.0) for r in runs[a][0]["history"]) for a in ARMS}
    n_val = max(1, runs["scratch"][0]["metrics"]["val_examples"])
    chance = 1.0 / k
    ref = max(("classic", "scratch"), key=lambda a: best[a])
    shown = {"classic": "the classic model's", "scratch": "scratch's best"}[ref]
    info = {"reference": ref, "reference_val_accuracy": best[ref], "chance": chance,
            "fraction": TARGET_FRACTION}
    if not vd.near_chance(best[ref], chance, n_val):
        return TARGET_FRACTION * best[ref], {**info, "rule": (
            f"{TARGET_FRACTION:.0%} of {shown} validation accuracy ({best[ref]:.1%}, first "
            "seed), the best without transfer")}
    info.update(reference="transfer", reference_val_accuracy=best["transfer"],
                without_transfer=best[ref])
    return TARGET_FRACTION * best["transfer"], {**info, "rule": (
        f"{TARGET_FRACTION:.0%} of transfer's best validation accuracy "
        f"({best['transfer']:.1%}, first seed): the best without transfer, {best[ref]:.1%}, "
        f"is within noise of chance ({chance:.1%})")}


def _charge_preparation(runs) -> None:
    """Probe and transfer extract the same frozen features and the feature cache lets the
    second reuse the first's, so both are charged the larger preparation time."""
    for s in range(len(runs["probe"])):
        shared = max(runs[a][s]["metrics"]["prepare_seconds"] for a in ("probe", "transfer"))
        for a in ARMS:
            runs[a][s]["prep"] = shared if a in ("probe", "transfer") else \
                runs[a][s]["metrics"]["prepare_seconds"]


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
        out["share"] = float(counts.max() / counts.sum())
        out["note"] = (f"{reference} predicts '{classes[int(counts.argmax())]}' for "
                       f"{out['share']:.0%} of test examples: its accuracy on that class is no "
                       "skill.")
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
            "2019 world average). The classic model's fit is not counted (seconds on a CPU).")
