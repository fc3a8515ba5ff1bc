"""The statistics of `headstart compare`: intervals, time to target, label efficiency,
per-class drops and the compute estimate (the verdict and the speed sentences: test_verdict)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.evaluation.indicators import (accuracy_ci, compute_estimate, default_target,
                                             label_efficiency, paired_difference,
                                             per_class_drops, time_to_target)
from headstart.exceptions import ConfigError, DataError


def predictions(n: int, acc: float, *, k: int = 4, seed: int = 0, base=None):
    """Labels and predictions with exactly round(acc * n) correct; `base` (a correctness
    mask) makes a second model share most of its mistakes with the first."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    right = np.zeros(n, bool)
    order = rng.permutation(n) if base is None else np.argsort(~base, kind="stable")
    right[order[:round(acc * n)]] = True
    pred = np.where(right, y, (y + 1) % k)
    return y, pred


def test_accuracy_ci_matches_resampling_examples():
    y, pred = predictions(400, 0.8)
    acc, lo, hi = accuracy_ci(y, pred, n_boot=4000)
    assert acc == pytest.approx(0.8)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 400, (4000, 400))
    ref_lo, ref_hi = np.percentile((y[idx] == pred[idx]).mean(1), [2.5, 97.5])
    assert lo == pytest.approx(ref_lo, abs=0.01) and hi == pytest.approx(ref_hi, abs=0.01)
    assert lo < acc < hi
    assert accuracy_ci(y, pred, n_boot=4000) == (acc, lo, hi)  # seeded: reproducible


def test_accuracy_ci_covers_the_truth_about_95_percent():
    rng = np.random.default_rng(3)
    hits = 0
    for r in range(300):
        y = np.zeros(200, int)
        pred = (rng.random(200) > 0.7).astype(int)  # true accuracy 0.7
        _, lo, hi = accuracy_ci(y, pred, seed=r)
        hits += lo <= 0.7 <= hi
    assert 0.90 <= hits / 300 <= 0.99


def test_paired_difference_is_narrower_than_unpaired_when_mistakes_are_shared():
    y, pa = predictions(500, 0.80, seed=1)
    _, pb = predictions(500, 0.75, seed=1, base=pa == y)  # b's mistakes include all of a's
    d = paired_difference(y, pa, pb)
    assert d["diff"] == pytest.approx(0.05)
    assert d["lo"] < 0.05 < d["hi"]
    _, alo, ahi = accuracy_ci(y, pa)
    _, blo, bhi = accuracy_ci(y, pb)
    unpaired = math.hypot((ahi - alo) / 2, (bhi - blo) / 2)
    assert (d["hi"] - d["lo"]) / 2 < 0.5 * unpaired
    assert d["lo"] > 0  # shared mistakes: 5 points are clearly real


def test_paired_difference_with_seeds_uses_their_means_and_widens():
    y, pa = predictions(500, 0.80, seed=2)
    _, pb = predictions(500, 0.75, seed=2, base=pa == y)
    plain = paired_difference(y, pa, pb)
    seeds_a, seeds_b = [0.80, 0.84, 0.76], [0.75, 0.70, 0.78]
    wide = paired_difference(y, pa, pb, seed_accs_a=seeds_a, seed_accs_b=seeds_b)
    assert wide["diff"] == pytest.approx(np.mean(seeds_a) - np.mean(seeds_b))
    assert wide["hi"] - wide["lo"] > 2 * (plain["hi"] - plain["lo"])
    one = paired_difference(y, pa, pb, seed_accs_a=[0.9], seed_accs_b=[0.75])
    assert one["diff"] == pytest.approx(0.15)  # one seed: its value, no seed spread
    assert one["hi"] - one["lo"] == pytest.approx(plain["hi"] - plain["lo"], abs=0.005)
    acc, lo, hi = accuracy_ci(y, pa, seed_accs=seeds_a)
    assert acc == pytest.approx(0.8) and hi - lo > accuracy_ci(y, pa)[2] - accuracy_ci(y, pa)[1]


@pytest.mark.parametrize("call, error", [
    (lambda: accuracy_ci([0, 1], [0]), DataError),
    (lambda: accuracy_ci([], []), DataError),
    (lambda: accuracy_ci([0.5, 1], [0, 1]), DataError),
    (lambda: accuracy_ci([0, 1], [0, 1], n_boot=10), ConfigError),
    (lambda: paired_difference([0, 1], [0, 1], [0]), DataError),
    (lambda: paired_difference([0, 1], [0, 1], [1, 1], seed_accs_a=[80, 90]), DataError),
    (lambda: time_to_target([{"val_acc": 0.5}], 0.4), DataError),
    (lambda: time_to_target([], 80), ConfigError),
    (lambda: label_efficiency([10, 5], [0.5, 0.6], [0.4, 0.5]), DataError),
    (lambda: label_efficiency([1, 5], [0.5], [0.4, 0.5]), DataError),
    (lambda: per_class_drops([0, 3], [0, 1], [0, 1], ["a", "b"]), DataError),
    (lambda: compute_estimate(flops_per_input=-1, forward_inputs=1, backward_inputs=1,
                              seconds=1), ConfigError),
])
def test_bad_inputs_raise_headstart_errors(call, error):
    with pytest.raises(error):
        call()


def test_time_to_target_counts_rows_across_phases():
    history = [{"phase": "head", "epoch": 1, "seconds": 1.5, "val_acc": 0.6},
               {"phase": "body", "epoch": 1, "seconds": 10.0, "val_acc": 0.8},
               {"phase": "body", "epoch": 2, "seconds": 10.0, "val_acc": 0.9},
               {"phase": "body", "epoch": 3, "seconds": 10.0, "val_acc": 0.85}]
    t = time_to_target(history, 0.85)
    assert (t["epochs"], t["seconds"], t["reached"]) == (3, 21.5, True)
    assert (t["total_epochs"], t["total_seconds"]) == (4, 31.5)
    never = time_to_target(history, 0.95)
    assert never["epochs"] is None and never["seconds"] is None and not never["reached"]
    no_val = time_to_target([{"epoch": 1, "seconds": 2.0}], 0.5)
    assert no_val["epochs"] is None and no_val["total_seconds"] == 2.0
    assert default_target(0.9) == pytest.approx(0.855)


def test_label_efficiency_interpolates_in_log_shots():
    shots = [1, 10, 100]
    le = label_efficiency(shots, [0.6, 0.8, 0.9], [0.3, 0.5, 0.7])
    # scratch reaches 0.6 halfway (in log) between 10 and 100 shots: sqrt(1000) ~ 31.6
    assert le["factor"] == pytest.approx(math.sqrt(1000), rel=1e-3) and not le["lower_bound"]
    assert le["text"].startswith("scratch needs 32× as many labels to match transfer at 1 shot")
    never = label_efficiency(shots, [0.9, 0.95, 0.97], [0.3, 0.5, 0.7], name="the classic model")
    assert never["lower_bound"] and never["factor"] == 100
    assert never["text"].startswith("the classic model needs more than 100× as many labels")
    same = label_efficiency([5, 20], [0.5, 0.6], [0.55, 0.7])
    assert same["factor"] == 1.0 and "no saving" in same["text"]


def test_per_class_drops_sorted_and_filtered():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    ref = y.copy()
    tr = y.copy()
    tr[:4] = 1      # class 0: 60% vs 100%
    tr[10:11] = 0   # class 1: 90% vs 100%
    rows = per_class_drops(y, tr, ref, ["cat", "dog", "<b>eel</b>", "absent"], min_drop=0.1)
    assert [r["class"] for r in rows] == ["cat", "dog"]
    assert rows[0] == {"class": "cat", "transfer_acc": 0.6, "reference_acc": 1.0,
                       "drop": pytest.approx(0.4), "n": 10}
    assert per_class_drops(y, tr, ref, ["a", "b", "c"], min_drop=0.5) == []


def test_compute_estimate_figures_and_assumptions():
    c = compute_estimate(flops_per_input=1e9, forward_inputs=1000, backward_inputs=500,
                         seconds=360.0)
    assert c["flops"] == pytest.approx(1e9 * (1000 + 3 * 500))
    assert c["joules"] == pytest.approx(30 * 360) and c["kwh"] == pytest.approx(0.003)
    assert c["co2_g"] == pytest.approx(0.003 * 475)
    assert "30 W" in c["assumptions"] and "475 g/kWh" in c["assumptions"]
    own = compute_estimate(flops_per_input=1, forward_inputs=0, backward_inputs=0, seconds=0,
                           watts=10, grid_g_per_kwh=50, assumptions="mine")
    assert own["assumptions"] == "mine" and own["gflop_per_joule"] is None
