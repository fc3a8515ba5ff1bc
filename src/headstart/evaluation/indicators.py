"""The statistics behind `headstart compare`: is transfer better than the models without it?

Pure NumPy. Every function takes plain lists or arrays and returns JSON-ready dicts of floats,
ints, strings and None, so a report can store them as they are.

Accuracy is a share in [0, 1] everywhere; the readable sentences speak in percentage points.
Intervals are 95% percentile-bootstrap intervals over the test examples. Resampling n test
examples with replacement and counting the correct ones is the same, in distribution, as one
binomial (or, for a paired difference, one multinomial) draw, so the bootstrap draws counts
directly and needs no n_boot x n index array.
"""
from __future__ import annotations

import math

import numpy as np

from ..exceptions import ConfigError, DataError

LEVEL = 0.95  # every interval here is a 95% interval
_TAILS = (100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2)


def accuracy_ci(y, pred, *, n_boot: int = 1000, seed: int = 0,
                seed_accs=None) -> tuple[float, float, float]:
    """(accuracy, lo, hi): the test accuracy of `pred` and its 95% bootstrap interval.

    With `seed_accs` (one accuracy per training seed, same test set), the point estimate is
    their mean and the interval also carries the between-seed noise, as in
    `paired_difference`.
    """
    correct = _correct(y, pred)
    _check_boot(n_boot)
    rng = np.random.default_rng(seed)
    n = len(correct)
    acc = float(correct.mean())
    boot = rng.binomial(n, acc, size=n_boot) / n - acc  # test-set noise, centred
    centre, spread = _seed_noise(acc, n_boot, rng, seed_accs)
    lo, hi = np.percentile(centre + boot + spread, _TAILS)
    return centre, float(lo), float(hi)


def paired_difference(y, pred_a, pred_b, *, n_boot: int = 1000, seed: int = 0,
                      seed_accs_a=None, seed_accs_b=None) -> dict:
    """acc(a) - acc(b) on the same test examples, with a paired 95% bootstrap interval.

    Paired: each bootstrap sample draws test examples and scores both models on the same
    ones, so the noise the two share (hard examples) cancels and the interval is narrower than
    two separate intervals would suggest.

    Several seeds: pass each arm's per-seed test accuracies as `seed_accs_a` / `seed_accs_b`.
    The point estimate becomes mean(seed_accs_a) - mean(seed_accs_b), and the interval is the
    2.5/97.5 percentiles of

        point + (paired bootstrap draw - its own centre)
              + s_a / sqrt(k_a) * T(k_a - 1) - s_b / sqrt(k_b) * T(k_b - 1)

    where s is the sample standard deviation of an arm's seed accuracies (ddof=1), k its
    number of seeds and T a Student-t draw. The first term is the test-set noise: every seed
    is scored on the same test set, so it does not shrink with k. The t terms are the
    training (seed) noise of each arm's mean; Student-t rather than normal because s comes
    from a handful of seeds. An arm with fewer than two seed accuracies adds no seed term
    (its spread is unknown) and, with none, keeps its accuracy on `pred`.
    """
    ca, cb = _correct(y, pred_a), _correct(y, pred_b)
    if len(ca) != len(cb):
        raise DataError(f"pred_a has {len(ca)} predictions and pred_b {len(cb)}; a paired "
                        "difference needs both models scored on the same test examples.")
    _check_boot(n_boot)
    rng = np.random.default_rng(seed)
    d = ca.astype(np.int64) - cb.astype(np.int64)  # -1, 0 or +1 per example
    n = len(d)
    p = np.array([(d == -1).mean(), (d == 0).mean(), (d == 1).mean()])
    counts = rng.multinomial(n, p / p.sum(), size=n_boot)
    observed = float(d.mean())
    boot = (counts[:, 2] - counts[:, 0]) / n - observed  # test-set noise, centred
    mean_a, spread_a = _seed_noise(float(ca.mean()), n_boot, rng, seed_accs_a)
    mean_b, spread_b = _seed_noise(float(cb.mean()), n_boot, rng, seed_accs_b)
    diff = mean_a - mean_b
    lo, hi = np.percentile(diff + boot + spread_a - spread_b, _TAILS)
    return {"diff": diff, "lo": float(lo), "hi": float(hi)}


def time_to_target(history: list[dict], target: float) -> dict:
    """Epochs and cumulative seconds until validation accuracy first reaches `target`.

    `history` is a run's rows in training order, each with "seconds" (that epoch's duration)
    and "val_acc"; rows without val_acc count towards time but cannot hit the target. Epochs
    are counted by row position (all phases, in order), so per-phase "epoch" numbers that
    restart at 1 do no harm. epochs and seconds are None when the target is never reached;
    total_epochs and total_seconds give the run's whole budget either way.
    """
    _check_share(target, "target")
    elapsed, hit = 0.0, None
    for i, row in enumerate(history, start=1):
        try:
            elapsed += float(row["seconds"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"History row {i} has no usable 'seconds' ({row!r}); each row "
                            "needs that epoch's duration in seconds.") from None
        acc = row.get("val_acc")
        if hit is None and acc not in (None, "") and float(acc) >= target - 1e-12:
            hit = (i, elapsed)
    return {"target": float(target), "reached": hit is not None,
            "epochs": hit[0] if hit else None, "seconds": round(hit[1], 3) if hit else None,
            "total_epochs": len(history), "total_seconds": round(elapsed, 3)}


def default_target(scratch_best: float) -> float:
    """The target accuracy when the user names none: 95% of scratch's best val accuracy."""
    _check_share(scratch_best, "scratch_best")
    return 0.95 * float(scratch_best)


def label_efficiency(shots, acc_transfer, acc_scratch, *, name: str = "scratch") -> dict:
    """How many more labels `name` (scratch, or the classic model) needs to match transfer at
    the smallest shot count.

    `shots` are increasing labelled examples per class; the accuracies are test accuracies at
    each. The scratch curve is interpolated linearly in log(shots) to find where it first
    reaches transfer's accuracy at shots[0]; factor = those shots / shots[0]. When scratch
    never gets there, factor = shots[-1] / shots[0] is a lower bound ("lower_bound": True).
    """
    s = np.asarray(shots, dtype=float)
    at, asc = np.asarray(acc_transfer, dtype=float), np.asarray(acc_scratch, dtype=float)
    if not (s.ndim == 1 and len(s) and at.shape == s.shape == asc.shape):
        raise DataError(f"label_efficiency needs equal, non-empty lists: got {len(s)} shot "
                        f"counts, {at.size} transfer and {asc.size} scratch accuracies.")
    if (s <= 0).any() or (np.diff(s) <= 0).any():
        raise DataError(f"Shot counts must be positive and increasing; got {s.tolist()}.")
    k0, goal = s[0], at[0]
    above = np.flatnonzero(asc >= goal)
    if len(above) == 0:
        needed, bound = s[-1], True
    elif above[0] == 0:
        needed, bound = k0, False
    else:
        i = above[0]
        t = (goal - asc[i - 1]) / (asc[i] - asc[i - 1])
        needed, bound = float(np.exp(np.log(s[i - 1]) + t * np.log(s[i] / s[i - 1]))), False
    factor = float(needed / k0)
    k = _shots(k0)
    if bound:
        text = (f"{name} needs more than {_times(factor)} as many labels to match transfer at {k} "
                f"(transfer {goal:.1%}; {name} reaches only {asc.max():.1%} "
                f"by {_shots(s[-1])})")
    elif factor <= 1.0:
        text = f"{name} matches transfer already at {k}: no saving in labels"
    else:
        text = (f"{name} needs {_times(factor)} as many labels to match transfer at {k} "
                f"(transfer {goal:.1%}; {name} gets there at about {_shots(needed)})")
    return {"factor": round(factor, 3), "lower_bound": bound, "at_shots": _num_value(k0),
            "scratch_shots": round(float(needed), 2), "transfer_at_shots": float(goal),
            "best_reached": float(asc.max()), "last_shots": _num_value(s[-1]),
            "reference_name": name, "text": text}


def per_class_drops(y, pred_transfer, pred_reference, classes, *,
                    min_drop: float = 0.05) -> list[dict]:
    """Classes whose accuracy (recall) with transfer is at least `min_drop` below the
    reference arm's, largest drop first. Classes absent from the test set are skipped; "n" is
    the number of test examples of the class, to judge how noisy a drop is."""
    y = _labels(y, "y")
    pt, pr = _labels(pred_transfer, "pred_transfer"), _labels(pred_reference, "pred_reference")
    if not len(y) == len(pt) == len(pr):
        raise DataError(f"Got {len(y)} labels, {len(pt)} transfer and {len(pr)} reference "
                        "predictions; all three must cover the same test examples.")
    if len(y) and int(y.max()) >= len(classes):
        raise DataError(f"Label {int(y.max())} has no name: only {len(classes)} classes.")
    rows = []
    for ci, name in enumerate(classes):
        mask = y == ci
        if not mask.any():
            continue
        ta, ra = float((pt[mask] == ci).mean()), float((pr[mask] == ci).mean())
        if ra - ta >= min_drop - 1e-12:
            rows.append({"class": str(name), "transfer_acc": ta, "reference_acc": ra,
                         "drop": ra - ta, "n": int(mask.sum())})
    return sorted(rows, key=lambda r: (-r["drop"], r["class"]))


# CPU package power while training, and grid carbon intensity: see compute_estimate.
CPU_WATTS = 30.0
GRID_G_PER_KWH = 475.0


def compute_estimate(*, flops_per_input: float, forward_inputs: int, backward_inputs: int,
                     seconds: float, watts: float = CPU_WATTS,
                     grid_g_per_kwh: float = GRID_G_PER_KWH,
                     assumptions: str | None = None) -> dict:
    """Training FLOPs, energy and CO2 of one arm, with the assumptions spelled out.

    flops = flops_per_input x (forward_inputs + 3 x backward_inputs): `forward_inputs` went
    through the network forward only (feature extraction, validation), `backward_inputs` were
    also back-propagated, which costs about twice the forward pass again. flops_per_input is
    in FLOPs (2 x multiply-accumulates), counted over the layers the inputs passed through.

    Energy is measured wall time x a stated CPU package power (default 30 W: the share of a
    server package that two busy cores draw; memory, power supply and cooling not counted),
    not FLOPs x joules-per-FLOP, because wall time includes the data loading and overheads
    that FLOP counts miss. The implied efficiency (GFLOP per joule) is returned to check it.
    CO2 = energy x grid intensity (default 475 g/kWh, the IEA's 2019 world average).
    """
    for name, v in (("flops_per_input", flops_per_input), ("forward_inputs", forward_inputs),
                    ("backward_inputs", backward_inputs), ("seconds", seconds),
                    ("watts", watts), ("grid_g_per_kwh", grid_g_per_kwh)):
        if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"compute_estimate: {name} must be a number >= 0, got {v!r}.")
    flops = float(flops_per_input) * (forward_inputs + 3 * backward_inputs)
    joules = float(watts) * float(seconds)
    kwh = joules / 3.6e6
    if assumptions is None:
        assumptions = (f"FLOPs = FLOPs per input x (forward-only inputs + 3 x back-propagated "
                       f"inputs); energy = wall time x {watts:g} W CPU package power (memory, "
                       f"power supply and cooling not counted); CO2 = energy x "
                       f"{grid_g_per_kwh:g} g/kWh (IEA 2019 world-average grid).")
    return {"flops": flops, "seconds": float(seconds), "joules": joules, "kwh": kwh,
            "co2_g": kwh * grid_g_per_kwh, "watts": float(watts),
            "grid_g_per_kwh": float(grid_g_per_kwh),
            "gflop_per_joule": flops / 1e9 / joules if joules else None,
            "assumptions": assumptions}


# -- helpers -------------------------------------------------------------------------------
def _labels(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{name} must be a flat list of integer class indices; got shape "
                        f"{arr.shape} of {arr.dtype}.")
    return arr.astype(np.int64)


def _correct(y, pred) -> np.ndarray:
    y, pred = _labels(y, "y"), _labels(pred, "pred")
    if len(y) != len(pred) or len(y) == 0:
        raise DataError(f"Got {len(y)} labels and {len(pred)} predictions; need the same, "
                        "non-zero number (one prediction per test example).")
    return y == pred


def _seed_noise(acc: float, n_boot: int, rng, seed_accs) -> tuple[float, np.ndarray]:
    """Point estimate (mean over seeds, else `acc`) and centred draws of the seed noise of
    that mean (zeros without two or more seeds); see paired_difference."""
    if seed_accs is None or len(seed_accs) == 0:
        return acc, np.zeros(n_boot)
    s = np.asarray(seed_accs, dtype=float)
    if s.ndim != 1 or not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise DataError(f"Seed accuracies must be shares in [0, 1]; got {list(seed_accs)}.")
    if len(s) < 2:
        return float(s.mean()), np.zeros(n_boot)
    t = rng.standard_t(len(s) - 1, size=n_boot)
    return float(s.mean()), s.std(ddof=1) / math.sqrt(len(s)) * t


def _check_boot(n_boot) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ConfigError(f"n_boot must be an integer >= 100 for a 95% interval; got "
                          f"{n_boot!r}. The default, 1000, is fast.")


def _check_share(v, name: str) -> None:
    if not (isinstance(v, (int, float, np.number)) and 0 <= v <= 1):
        raise ConfigError(f"{name} must be an accuracy in [0, 1]; got {v!r}.")


def _times(f: float) -> str:
    return f"{f:.1f}×" if f < 10 else f"{f:.0f}×"


def _shots(v: float) -> str:
    shown = f"{v:.0f}" if v >= 10 or float(v).is_integer() else f"{v:.1f}"
    return f"{shown} shot" + ("" if shown == "1" else "s")


def _num_value(v: float):
    return int(v) if float(v).is_integer() else float(v)
