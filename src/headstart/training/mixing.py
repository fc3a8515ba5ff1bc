"""How far to adapt, measured: interpolate between the start of fine-tuning and its end and
keep the mix that validation prefers (WiSE-FT, Wortsman et al., CVPR 2022).

Fine-tuning starts from the pre-trained body with the head fitted on its frozen features (LP-FT,
Kumar et al., ICLR 2022): that start *is* the linear probe. Weights on the straight line from it
to the fine-tuned weights, ``start + alpha * (end - start)``, give a family of models from the
probe (alpha 0) to the fine-tuned model (alpha 1); intermediate mixes often beat both ends,
and alpha 0 means that fine-tuning can never hand the user less than the frozen features did on
validation. Which mix: the one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani
and Friedman, section 7.10): the smallest alpha whose validation accuracy is within one
standard error of the best mix's, the error of their paired difference on the same
examples. On a few dozen validation examples one image is several points, and the best of
five mixes wins by luck; the rule keeps the model closer to the pre-trained one unless
adapting wins by more than that noise. Where validation holds fewer than a hundred examples,
the plan is also run on other folds of the training split (crossfit.py) and each mix is judged
on every example of the pool, so that a consistent gain can pass the rule. The one exception is the pair objective
(`contrastive`, SetFit-style): its few-shot gain over the frozen encoder is the published
finding across many datasets (Tunstall et al. 2022), so there the rule prefers the tuned
end, and moves toward the pre-trained one only where validation shows it clearly better.
Under the pair objective every mix is judged by a head fitted on its own embeddings, and the
mix of 0 by the probe's own (standardised, on the frozen features), so that there too a mix
of 0 is exactly the linear probe.
BatchNorm statistics are kept at their pre-trained values while fine-tuning (the
BatchNorm policy), so every mix runs on the statistics it was trained with.
"""
from __future__ import annotations

import numpy as np
import torch

MIX_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def interpolate(start: dict, end: dict, alpha: float) -> dict:
    """start + alpha * (end - start) for floating-point tensors; the others (counters) from
    `end`."""
    out = {}
    for k, e in end.items():
        s = start[k]
        out[k] = torch.lerp(s, e, float(alpha)) if e.is_floating_point() else e.clone()
    return out


def better(a: dict, b: dict | None) -> bool:
    """Validation accuracy, then validation loss; on a tie the earlier (smaller) one stays."""
    if b is None:
        return True
    if abs(a["val_acc"] - b["val_acc"]) > 1e-9:
        return a["val_acc"] > b["val_acc"]
    return a["val_loss"] < b["val_loss"] - 1e-6


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(b - a) for right/wrong flags of two models on the same
    examples."""
    d = b.astype(float) - a.astype(float)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")


def choose_mix(model, start: dict, end: dict, validate, *, alphas=MIX_ALPHAS,
               prefer_end: bool = False, more=()) -> tuple[float, list[dict]]:
    """(alpha, rows): the mix of `start` and `end` that the one-standard-error rule keeps
    (see the module's docstring), and every mix's scores. `validate(alpha)` scores the model
    as loaded: {val_acc, val_loss, right (which validation examples it gets right)}.
    `prefer_end`: the rule's preferred model is the tuned end (the largest alpha within one
    standard error) instead of the pre-trained one. `more`: the same evidence from other
    held-out examples ({alpha: {right, val_loss}} per fold, crossfit.py), joined to the
    validation's: each mix is judged on all of them. Leaves the model at the chosen mix."""
    exact, right, best = [], [], None
    for a in sorted(alphas):
        model.load_state_dict(interpolate(start, end, a))
        scores = validate(a)
        parts = [(np.asarray(scores["right"], dtype=bool), float(scores["val_loss"]))]
        parts += [(np.asarray(m[a]["right"], dtype=bool), float(m[a]["val_loss"])) for m in more]
        right.append(np.concatenate([r for r, _ in parts]))
        # the accuracy from the flags themselves, in float64: the scores' own can be a float32
        # mean, in which 49/50 - 48/50 is above 1/50 and the rule's tie would be broken
        acc = float(right[-1].mean()) if len(right[-1]) else float(scores["val_acc"])
        loss = (sum(len(r) * v for r, v in parts) / len(right[-1]) if len(right[-1])
                else parts[0][1])
        exact.append({"alpha": a, "val_acc": acc, "val_loss": loss})
        if better(exact[-1], None if best is None else exact[best]):
            best = len(exact) - 1
    ses = [paired_se(r, right[best]) for r in right]
    behind = [exact[best]["val_acc"] - e["val_acc"] for e in exact]
    # the decision on the exact figures, the rows rounded for the record: one example of n
    # behind is 1/n, and so is the standard error of a paired difference in that one example
    # (a tie the rule counts as within), which rounding either figure could break either way
    rows = [{"alpha": e["alpha"], "val_acc": round(e["val_acc"], 4),
             "val_loss": round(e["val_loss"], 4), **({"best": True} if i == best else {}),
             "behind_best": round(d, 4), "se": round(se, 4) if np.isfinite(se) else None,
             **({"examples": len(right[i])} if more else {})}
            for i, (e, d, se) in enumerate(zip(exact, behind, ses))]
    # the first alpha from the preferred end within one standard error of the best
    order = range(len(rows) - 1, -1, -1) if prefer_end else range(len(rows))
    chosen = next(rows[i] for i in order if i == best or behind[i] <= ses[i] * (1 + 1e-9) + 1e-12)
    model.load_state_dict(interpolate(start, end, chosen["alpha"]))
    return chosen["alpha"], rows


def mix_reason(alpha: float, rows: list[dict], prefer_end: bool = False) -> str:
    """Why the kept mix is not the best-scoring one, for the log (empty when it is)."""
    best = next((r for r in rows if r.get("best")), None)  # as choose_mix marked it
    if best is None or best["alpha"] == alpha:
        return " (the probe: adapting did not help here)" if alpha == 0 else ""
    closer = "the tuned end, as pair training is preferred" if prefer_end else \
        "the mix closer to the pre-trained weights" + (", the probe" if alpha == 0 else "")
    return f" (within one standard error of the best, {best['alpha']:g}: {closer})"
