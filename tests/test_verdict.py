"""What `headstart compare` concludes: the model to use, the verdict against the best model
without transfer (classic or scratch), the banner, degenerate seeds and the speed sentences."""
from __future__ import annotations

import re

import pytest

from headstart.evaluation.indicators import time_to_target
from headstart.evaluation.verdict import (chance_level, decide, degenerate_seeds, near_chance,
                                          speedup)
from test_report import check_sentence_numbers

SETTING = {"strategy": "fine_tune", "epochs": 5, "modality": "image", "image_size": 56,
           "native_size": 224}


def arms(seeds=None, **accs):
    """Arms at the given test accuracies (+-4 points), validation = test unless val_<arm>."""
    out = {}
    for a in ("probe", "transfer", "scratch", "classic"):
        v = accs[a]
        out[a] = {"accuracy": v, "ci": [v - 0.04, v + 0.04],
                  "val_accuracy": accs.get(f"val_{a}", v),
                  "seed_accuracies": (seeds or {}).get(a, [v])}
    return out


def diffs(a, width=0.04):
    acc = {k: r["accuracy"] for k, r in a.items()}
    return {f"{x}-{y}": {"diff": acc[x] - acc[y], "lo": acc[x] - acc[y] - width,
                         "hi": acc[x] - acc[y] + width}
            for x in ("transfer", "probe") for y in ("probe", "scratch", "classic") if x != y}


def verdict(a, setting=SETTING, **kw):
    v = decide(a, diffs(a, **kw), chance=0.1, n_test=500, setting=setting)
    check_sentence_numbers({"verdict": v})  # every number in its sentences is its own figure
    return v


def test_transfer_beats_the_classic_model_and_says_by_how_much():
    v = verdict(arms(probe=0.80, transfer=0.88, scratch=0.10, classic=0.72))
    assert (v["label"], v["use"], v["baseline"], v["banner"]) == (
        "positive", "transfer", "classic", "good")
    assert v["reason"].startswith("Transfer is worth it: transfer (fine_tune), 88.0%, beats the "
                                  "best model without it (the classic model, 72.0%) by +16.0")
    assert "did not learn within the budget (5 epochs)" in v["scratch_reason"]
    assert "scratch did not learn, so it does not count" in v["baseline_reason"]
    own = verdict(arms(probe=0.80, transfer=0.80, scratch=0.1, classic=0.6),
                  setting={**SETTING, "strategy": "linear_probe"})
    assert (own["use"], own["banner"], own["forgetting"]) == ("probe", "good", None)


def test_a_classic_model_that_matches_transfer_is_the_advice():
    v = verdict(arms(probe=0.79, transfer=0.79, scratch=0.10, classic=0.80))
    assert (v["label"], v["use"], v["baseline"], v["banner"]) == (
        "none (within noise)", "classic", "classic", "neutral")
    assert v["reason"].startswith("A classic model does as well: the classic model, 80.0%")
    assert "not worth it at this data size and resolution" in v["reason"]
    assert "a larger --image-size (this run used 56 px; the backbone was pre-trained at " \
           "224 px)" in v["advice"] and v["advice"].startswith("Use the classic model;")


def test_fine_tune_below_the_probe_recommends_the_probe_and_no_green_banner():
    v = verdict(arms(probe=0.88, transfer=0.787, scratch=0.10, classic=0.70))
    assert (v["label"], v["recipe"], v["use"], v["forgetting"]) == (
        "positive", "probe", "probe", True)
    assert v["banner"] == "caution" and v["headline"].startswith("Use the frozen probe")
    assert "9.3 points below the frozen probe" in v["forgetting_reason"]
    small = decide(arms(probe=0.80, transfer=0.79, scratch=0.1, classic=0.7), {
        **diffs(arms(probe=0.80, transfer=0.79, scratch=0.1, classic=0.7)),
        "transfer-probe": {"diff": -0.01, "lo": -0.02, "hi": -0.0004}}, chance=0.1,
        n_test=500, setting=SETTING)
    assert "(95% CI -2.0 to -0.04 points)" in small["forgetting_reason"]  # not "to -0.0"
    check_sentence_numbers({"verdict": small})
    tie = verdict(arms(probe=0.80, transfer=0.79, scratch=0.1, classic=0.7))
    assert (tie["use"], tie["forgetting"], tie["banner"]) == ("probe", False, "caution")
    assert "not above the frozen probe" in tie["forgetting_reason"]


def test_a_scratch_arm_that_learned_can_be_the_baseline_and_chance_never_is():
    learned = verdict(arms(probe=0.8, transfer=0.85, scratch=0.6, classic=0.5))
    assert learned["baseline"] == "scratch" and learned["scratch_learned"]
    assert "training from scratch (60.0%, against the classic model's 50.0%)" in \
        learned["baseline_reason"]
    at_chance = verdict(arms(probe=0.8, transfer=0.85, scratch=0.11, classic=0.05,
                             val_scratch=0.9))  # even if its validation looked better
    assert at_chance["baseline"] == "classic" and not at_chance["scratch_learned"]


def test_negative_transfer_names_what_to_use_instead():
    v = verdict(arms(probe=0.5, transfer=0.55, scratch=0.7, classic=0.6))
    assert (v["label"], v["use"], v["banner"]) == ("negative", "scratch", "bad")
    assert v["reason"].startswith("Negative transfer: transfer (fine_tune), 55.0%, ends 15.0 "
                                  "points below the best model without it (training from "
                                  "scratch, 70.0%)")
    assert "a source closer to this data" in v["advice"]
    text = verdict(arms(probe=0.5, transfer=0.5, scratch=0.1, classic=0.52),
                   setting={**SETTING, "modality": "text", "strategy": "fine_tune"})
    assert "--strategy contrastive" in text["advice"] and "resolution" not in text["reason"]


def test_degenerate_seed_is_flagged_and_keeps_the_banner_from_green():
    seeds = {"transfer": [0.86, 0.10, 0.88]}
    v = verdict(arms(seeds, probe=0.80, transfer=0.61, scratch=0.1, classic=0.5))
    assert [(r["arm"], r["seed"]) for r in v["degenerate_seeds"]] == [("transfer", 2)]
    assert v["banner"] != "good" and "seed 2 (10.0%, chance 10.0%; its other seeds 86.0% " \
        "to 88.0%)" in v["degenerate_reason"]
    assert degenerate_seeds({"scratch": [0.1, 0.11, 0.09]}, 0.1, 500) == []  # all at chance
    assert chance_level([0, 0, 0, 1]) == 0.75
    assert near_chance(0.12, 0.1, 500) and not near_chance(0.2, 0.1, 500)


# -- speed -----------------------------------------------------------------------------------
def ttt(accs, seconds=2.0, target=0.8):
    return time_to_target([{"seconds": seconds, "val_acc": a} for a in accs], target)


def test_speed_sentences_are_worded_by_direction():
    fast, slow = ttt([0.9], 2.0), ttt([0.1 * i for i in range(1, 9)], 5.0)
    s = speedup(fast, slow)
    assert (s["epochs"], s["seconds"], s["lower_bound"]) == (8.0, 20.0, False)
    assert s["text"] == ("Transfer reached the target in 1 epoch (2.0 s), scratch in 8 epochs "
                         "(40.0 s): transfer needed 8.0× fewer epochs and 20× less time.")
    back = speedup(slow, fast)
    assert back["text"].endswith("transfer needed 8.0× more epochs and 20× more time.")
    assert back["epochs"] == 0.125 and back["epochs_factor"] == 8.0


def test_a_lower_bound_below_one_is_not_stated():
    three, never_in_two = ttt([0.5, 0.6, 0.9], 10.0), ttt([0.1, 0.2], 8.0)
    s = speedup(three, never_in_two)  # the case: 3 epochs against 2 that never got there
    assert s["lower_bound"] and s["epochs"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["text"] == ("Scratch did not reach the target within 2 epochs (16.0 s); transfer "
                         "reached it in 3 epochs (30.0 s).")
    assert not re.search(r"\d× fewer|0\.\d×", s["text"])
    bound = speedup(ttt([0.9], 3.0), ttt([0.1] * 4, 5.0))
    assert bound["text"].endswith("transfer needed at least 4.0× fewer epochs and at least "
                                  "6.7× less time.")
    assert speedup(ttt([0.1]), ttt([0.9]))["text"].startswith("Transfer did not reach")
    assert speedup(ttt([0.1]), ttt([0.1]))["text"].startswith("Neither reached")


def test_the_classic_model_is_timed_in_seconds_only():
    s = speedup(ttt([0.9], 30.0), ttt([0.85], 1.5), other="the classic model",
                units=("seconds",))
    assert s["epochs"] is None and s["text"] == (
        "Transfer reached the target in 30.0 s, the classic model in 1.5 s: transfer needed "
        "20× more time.")
    check_sentence_numbers({"speedup": s})
