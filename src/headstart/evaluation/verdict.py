"""What `headstart compare` concludes, in sentences a user can act on: which model to use, and
whether transfer beats the best model a user could build without it.

Pure Python on plain dicts (the arms' accuracies, intervals and paired differences computed by
`indicators`), so every sentence is built from figures that are stored next to it in
report.json; a test checks that every number in a sentence is one of them.

Arms: "probe" (frozen pre-trained features + linear head), "transfer" (the user's strategy from
the pre-trained weights), "scratch" (the same architecture from random weights, the same epoch
budget) and "classic" (a logistic regression on pixels, HOG or TF-IDF: evaluation/classic.py).
"""
from __future__ import annotations

import math

COST_ORDER = ("classic", "probe", "transfer", "scratch")  # cheapest first: the pick on a tie
BANNERS = ("good", "caution", "neutral", "bad")


def chance_level(y) -> float:
    """The accuracy of always predicting the commonest test class (1/k when balanced)."""
    counts: dict = {}
    for v in y:
        counts[v] = counts.get(v, 0) + 1
    return max(counts.values()) / len(y)


def near_chance(acc: float, chance: float, n: int) -> bool:
    """Within noise of chance: at most two binomial standard errors above it on n examples."""
    return acc <= chance + 2 * math.sqrt(chance * (1 - chance) / max(1, n))


def degenerate_seeds(seed_accs: dict, chance: float, n: int) -> list[dict]:
    """Seeds on which an arm stayed at chance while its other seeds did not: one failed run
    that the mean and its interval would otherwise blend with the successes."""
    out = []
    for arm, accs in seed_accs.items():
        flags = [near_chance(a, chance, n) for a in accs or []]
        if len(flags) < 2 or all(flags) or not any(flags):
            continue
        others = [a for a, f in zip(accs, flags) if not f]
        out += [{"arm": arm, "seed": i + 1, "accuracy": a, "chance": chance,
                 "others_min": min(others), "others_max": max(others)}
                for i, (a, f) in enumerate(zip(accs, flags)) if f]
    return out


def arm_name(arm: str, strategy: str | None = None) -> str:
    return {"probe": "the frozen probe (linear_probe)", "classic": "the classic model",
            "scratch": "training from scratch"}.get(arm, f"transfer ({strategy or 'fine_tune'})")


def decide(arms: dict, diffs: dict, *, chance: float, n_test: int, setting: dict) -> dict:
    """The verdict. `arms[a]`: {"accuracy", "ci", "val_accuracy", "seed_accuracies"} for a in
    probe, transfer, scratch, classic; `diffs["a-b"]`: paired_difference of a minus b on the
    test set, for a in (transfer, probe) and b in (probe, scratch, classic) (a != b);
    `setting`: {"strategy", "epochs", "modality", "image_size", "native_size"}.

    1. The best model without transfer is classic or scratch, whichever is better on
       validation; a scratch arm whose test interval includes chance did not learn within the
       budget and is not a candidate (nor evidence).
    2. The recipe with transfer is the transfer arm, unless it is not above the frozen probe
       on the test set: then the probe, which is as good (or better) and costs a fraction.
    3. label: positive / none (within noise) / negative, from the 95% interval of recipe minus
       best-without on the test set; `use` is the arm to use; `banner` is good (positive, and
       the transfer arm, the user's own recipe, is the one to use; no failed seed), caution
       (positive, but use the probe instead, or a seed failed), neutral (no difference
       beyond noise) or bad (negative).
    """
    strategy = setting.get("strategy")
    scratch_learned = arms["scratch"]["ci"][0] > chance
    pool = ["classic"] + (["scratch"] if scratch_learned else [])
    base = max(pool, key=lambda a: (arms[a]["val_accuracy"] or 0.0, -COST_ORDER.index(a)))
    recipe, forgetting, why = _recipe(diffs["transfer-probe"], strategy)
    d = diffs[f"{recipe}-{base}"]
    label = "positive" if d["lo"] > 0 else "negative" if d["hi"] < 0 else "none (within noise)"
    use = recipe if label == "positive" else base if label == "negative" else \
        min(recipe, base, key=COST_ORDER.index)
    bad_seeds = degenerate_seeds({a: arms[a].get("seed_accuracies") for a in arms}, chance,
                                 n_test)
    chosen = recipe == "transfer" or strategy == "linear_probe"  # the user's own recipe won
    banner = ("bad" if label == "negative" else "neutral" if label != "positive" else
              "good" if chosen and not bad_seeds else "caution")
    figures = {"recipe_accuracy": arms[recipe]["accuracy"], "baseline_accuracy":
               arms[base]["accuracy"], "diff": d["diff"], "lo": d["lo"], "hi": d["hi"],
               "chance": chance, "epochs": setting.get("epochs"),
               "image_size": setting.get("image_size"), "native_size": setting.get("native_size"),
               "scratch_accuracy": arms["scratch"]["accuracy"],
               "scratch_ci": arms["scratch"]["ci"],
               "classic_val": arms["classic"]["val_accuracy"],
               "scratch_val": arms["scratch"]["val_accuracy"]}
    out = {"label": label, "use": use, "use_name": arm_name(use, strategy), "recipe": recipe,
           "baseline": base, "banner": banner, "difference": dict(d), "figures": figures,
           "reason": _reason(label, recipe, base, figures, setting),
           "advice": _advice(label, base, use, setting),
           "baseline_reason": _baseline_reason(arms, base, scratch_learned),
           "scratch_learned": scratch_learned,
           "scratch_reason": _scratch_reason(arms["scratch"], scratch_learned, chance,
                                             setting.get("epochs")),
           "forgetting": forgetting, "forgetting_reason": why,
           "probe_difference": dict(diffs["transfer-probe"]),
           "degenerate_seeds": bad_seeds, "degenerate_reason": _seeds_reason(bad_seeds)}
    out["headline"] = _headline(out)
    return out


def _recipe(d: dict, strategy) -> tuple[str, bool | None, str | None]:
    """(transfer or probe, forgetting, why) from transfer minus probe on the test set."""
    ci = f"(95% CI {_pts(d['lo'])} to {_pts(d['hi'])} points)"
    if strategy == "linear_probe":  # the transfer arm is the probe itself: nothing to check
        return "probe", None, None
    if d["hi"] < 0:
        return "probe", True, (
            f"Fine-tuning ({strategy}) ends {_pts(-d['diff'], sign=False)} points below the "
            f"frozen probe {ci}: a sign of catastrophic forgetting. Use the probe; to fine-tune, "
            "try lower learning rates for the early layers, or gradual unfreezing.")
    if d["diff"] <= 0:
        return "probe", False, (
            f"Fine-tuning ({strategy}) is not above the frozen probe: {_pts(d['diff'])} points "
            f"{ci}. Use the probe, which does as well for a fraction of the compute.")
    if d["lo"] <= 0:
        return "transfer", False, (
            f"Fine-tuning ({strategy}) is {_pts(d['diff'])} points above the frozen probe "
            f"{ci}, within noise: the probe would do nearly as well for far less compute.")
    return "transfer", False, (f"Fine-tuning ({strategy}) beats the frozen probe by "
                               f"{_pts(d['diff'])} points {ci}.")


def _reason(label, recipe, base, f, setting) -> str:
    strategy = setting.get("strategy")
    ci = f"(95% CI {_pts(f['lo'])} to {_pts(f['hi'])} points)"
    r = f"{arm_name(recipe, strategy)}, {_pct(f['recipe_accuracy'])}"
    b = f"{arm_name(base)}, {_pct(f['baseline_accuracy'])}"
    if label == "positive":
        return (f"Transfer is worth it: {r}, beats the best model without it ({b}) by "
                f"{_pts(f['diff'])} points {ci}.")
    if label == "negative":
        return (f"Negative transfer: {r}, ends {_pts(-f['diff'], sign=False)} points below the "
                f"best model without it ({b}) {ci}.")
    who = "A classic model does as well" if base == "classic" else "Training from scratch " \
        "does as well"
    return (f"{who}: {b}, against {r}; the difference, {_pts(f['diff'])} points {ci}, "
            "includes zero. Transfer is not worth it at this data size"
            + (" and resolution." if setting.get("modality") == "image" else "."))


def _advice(label, base, use, setting) -> str:
    size, native = setting.get("image_size"), setting.get("native_size")
    if label == "positive":
        return f"Use {arm_name(use, setting.get('strategy'))}."
    tips = []
    if setting.get("modality") == "image" and size and native and size < native:
        tips.append(f"a larger --image-size (this run used {size} px; the backbone was "
                    f"pre-trained at {native} px)")
    if setting.get("modality") == "text" and setting.get("strategy") != "contrastive":
        tips.append("--strategy contrastive (tunes a text encoder on pairs of examples)")
    if base == "scratch":
        tips.append("a source closer to this data (`headstart rank`, or `headstart pretrain` on "
                    "related data)")
    tips.append("more labelled examples")
    return f"Use {arm_name(use, setting.get('strategy'))}; to make transfer pay, try " + \
        "; or ".join(tips) + "."


def _baseline_reason(arms, base, scratch_learned) -> str:
    c, s = arms["classic"]["val_accuracy"], arms["scratch"]["val_accuracy"]
    if not scratch_learned:
        return (f"The best model without transfer is the classic model (validation "
                f"{_pct(c)}): scratch did not learn, so it does not count.")
    other = "scratch" if base == "classic" else "the classic model"
    return (f"The best model without transfer, by validation accuracy: {arm_name(base)} "
            f"({_pct(c if base == 'classic' else s)}, against {other}'s "
            f"{_pct(s if base == 'classic' else c)}).")


def _scratch_reason(arm: dict, learned: bool, chance: float, epochs) -> str:
    lo, hi = arm["ci"]
    if learned:
        return (f"Training from scratch learned: {_pct(arm['accuracy'])} (95% CI {_pct(lo)} to "
                f"{_pct(hi)}), above chance ({_pct(chance)}).")
    return (f"Training from scratch did not learn within the budget ({_n(epochs, 'epoch')}): "
            f"{_pct(arm['accuracy'])} (95% CI {_pct(lo)} to {_pct(hi)}) includes chance "
            f"({_pct(chance)}). It is not evidence for or against transfer.")


def _seeds_reason(rows: list[dict]) -> str | None:
    if not rows:
        return None
    parts = [f"{arm_name(r['arm'])} on seed {r['seed']} ({_pct(r['accuracy'])}, chance "
             f"{_pct(r['chance'])}; its other seeds {_pct(r['others_min'])} to "
             f"{_pct(r['others_max'])})" for r in rows]
    return ("A degenerate seed: " + "; ".join(parts) + " stayed at chance. That run failed; "
            "the mean over seeds and its interval mix it with runs that learned.")


def _headline(v: dict) -> str:
    if v["label"] == "positive":
        return f"Use {v['use_name']}: transfer beats the best model without it"
    if v["label"] == "negative":
        return f"Use {v['use_name']}: negative transfer"
    return f"Use {v['use_name']}: transfer does not beat it beyond noise"


# -- speed ---------------------------------------------------------------------------------
def speedup(t_transfer: dict, t_other: dict, *, other: str = "scratch",
            units: tuple[str, ...] = ("epochs", "seconds")) -> dict:
    """How much sooner (or later) transfer reaches the target than `other`, in words by
    direction. Inputs are `indicators.time_to_target` results.

    "epochs" and "seconds" are other / transfer (above 1: transfer is faster); when only
    transfer reaches the target they are lower bounds (other's whole budget over transfer's
    time) and are stated only when above 1, since a bound below 1 says nothing. None where
    transfer never reaches the target or a time is zero.
    """
    a, b = t_transfer, t_other
    out = {"other": other, "lower_bound": bool(a.get("reached") and not b.get("reached")),
           "transfer": _times(a), "reference": _times(b)}
    for unit in ("epochs", "seconds"):
        num = b[unit] if b.get("reached") else b[f"total_{unit}"]
        r = num / a[unit] if unit in units and a.get("reached") and a[unit] and num else None
        out[unit] = None if r is None else round(r, 3)
        out[f"{unit}_factor"] = None if r is None else round(max(r, 1 / r), 3)  # as worded
    out["text"] = _speed_text(out, a, b, other, units)
    return out


def _times(t: dict) -> dict:
    return {k: t.get(k) for k in ("reached", "epochs", "seconds", "total_epochs",
                                  "total_seconds")}


def _speed_text(out, a, b, other, units) -> str:
    ep = "epochs" in units

    def when(t):
        return (f"{_n(t['epochs'], 'epoch')} ({t['seconds']:.1f} s)" if ep
                else f"{t['seconds']:.1f} s")

    def budget(t):
        return (f"{_n(t['total_epochs'], 'epoch')} ({t['total_seconds']:.1f} s)" if ep
                else f"{t['total_seconds']:.1f} s")
    if a.get("reached") and b.get("reached"):
        parts = [_ratio(out[u], u) for u in units if out[u]]
        return (f"Transfer reached the target in {when(a)}, {other} in {when(b)}: transfer "
                f"needed {' and '.join(parts)}." if parts else "Too little timing to compare.")
    if a.get("reached"):
        known = [f"at least {_ratio(out[u], u)}" for u in units if out[u] and out[u] > 1]
        tail = f": transfer needed {' and '.join(known)}" if known else ""
        return (f"{other.capitalize()} did not reach the target within {budget(b)}; transfer "
                f"reached it in {when(a)}{tail}.")
    if b.get("reached"):
        return (f"Transfer did not reach the target within {budget(a)}; {other} reached it in "
                f"{when(b)}.")
    return (f"Neither reached the target: transfer within {budget(a)}, {other} within "
            f"{budget(b)}.")


def _ratio(r: float, unit: str) -> str:
    """r = other / transfer: 'N× fewer epochs', 'N× more epochs', 'N× less time', ..."""
    if abs(r - 1) < 0.05:
        return f"about as many {unit}" if unit == "epochs" else "about as much time"
    few, many = ("fewer epochs", "more epochs") if unit == "epochs" else ("less time",
                                                                         "more time")
    return f"{_x(r)} {few}" if r > 1 else f"{_x(1 / r)} {many}"


# -- formatting ----------------------------------------------------------------------------
def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pts(share: float, *, sign: bool = True) -> str:
    """Percentage points, one decimal; two where one would show a non-zero bound as 0.0 (an
    interval "to -0.0" reads as touching zero when it does not)."""
    digits = 2 if share and abs(100 * share) < 0.05 else 1
    return f"{100 * share:+.{digits}f}" if sign else f"{100 * share:.{digits}f}"


def _x(f: float) -> str:
    return f"{f:.1f}×" if f < 10 else f"{f:.0f}×"


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")
