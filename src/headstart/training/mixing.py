"""How far to adapt, measured: interpolate between the start of fine-tuning and its end and
keep the mix that validation prefers (WiSE-FT, Wortsman et al., CVPR 2022).

Fine-tuning starts from the pre-trained body with the head fitted on its frozen features (LP-FT,
Kumar et al., ICLR 2022): that start *is* the linear probe. Weights on the straight line from it
to the fine-tuned weights, ``start + alpha * (end - start)``, give a family of models from the
probe (alpha 0) to the fine-tuned model (alpha 1); intermediate mixes often beat both ends,
and alpha 0 means that fine-tuning can never hand the user less than the frozen features did on
validation. BatchNorm statistics are kept at their pre-trained values while fine-tuning (the
BatchNorm policy), so every mix runs on the statistics it was trained with.
"""
from __future__ import annotations

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
    """Validation accuracy, then validation loss; on a tie the smaller mix (closer to the
    frozen features) stays."""
    if b is None:
        return True
    if abs(a["val_acc"] - b["val_acc"]) > 1e-9:
        return a["val_acc"] > b["val_acc"]
    return a["val_loss"] < b["val_loss"] - 1e-6


def choose_mix(model, start: dict, end: dict, validate, *, alphas=MIX_ALPHAS,
               known: dict | None = None) -> tuple[float, list[dict]]:
    """(alpha, rows): the mix of `start` and `end` that `validate(alpha)` (-> {val_acc,
    val_loss} of the model as loaded) scores best, and every mix's scores. `known` maps alphas already
    scored (the probe's 0, the kept epoch's 1) to their scores. Leaves the model at the
    chosen mix."""
    rows, best = [], None
    for a in sorted(alphas):
        if known and a in known:
            scores = known[a]
        else:
            model.load_state_dict(interpolate(start, end, a))
            scores = validate(a)
        row = {"alpha": a, "val_acc": round(float(scores["val_acc"]), 4),
               "val_loss": round(float(scores["val_loss"]), 4)}
        rows.append(row)
        if better(row, best):
            best = row
    model.load_state_dict(interpolate(start, end, best["alpha"]))
    return best["alpha"], rows
