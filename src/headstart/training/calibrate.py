"""Calibrated probabilities: temperature scaling (Guo et al., ICML 2017) fitted on validation
logits, and the expected calibration error (ECE) that says whether it helped.

One scalar T divides the logits: it changes no prediction, only how sure the model says it is.
A fine-tuned network or a weakly regularised head on few examples is typically overconfident
(T > 1 softens it). The ECE before and after is measured by two-fold cross-fitting on the
validation examples (T fitted on one half, ECE measured on the other, then the other way
round), so the "after" figure is not judged on the examples T was fitted on; the kept T is
then fitted on all of them, and kept only where it lowers the cross-fitted log loss by more
than one standard error of the per-example difference (the rule the mix of fine-tuned weights
follows, mixing.py): on a few hundred validation examples of an accurate model the two
figures often differ in the fourth decimal, where a temperature moves the probabilities on
noise.

A temperature is measured against the model's mistakes: where every example it is fitted on is
right, the log loss keeps falling as T shrinks, so the fit would run to the smallest T allowed
(logits x20) and the saved model would say 1.0000 for whatever it sees, wrong or right. That is
common on the small validation splits of small data; there T stays 1 (no evidence either way),
for the kept T and for each half of the cross-fit alike."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

ECE_BINS = 15
T_RANGE = (0.05, 20.0)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of softmax(logits / T) on (logits, y);
    1 where every example is right (the minimum is then at T -> 0: no finite estimate)."""
    if no_mistakes(logits, y):
        return 1.0
    z, t = np.asarray(logits, np.float64), np.asarray(y, np.int64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[np.arange(len(t)), t]).mean())

    found = minimize_scalar(nll, bounds=np.log(T_RANGE), method="bounded",
                            options={"xatol": 1e-6})
    return float(np.clip(np.exp(found.x), *T_RANGE))


def no_mistakes(logits: np.ndarray, y: np.ndarray) -> bool:
    return bool((np.asarray(logits).argmax(1) == np.asarray(y)).all())


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    conf = probs.max(1)
    right = probs.argmax(1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(right[sel].mean() - conf[sel].mean())
    return float(total / max(len(conf), 1))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's negative log-likelihood."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def calibrate(logits: np.ndarray, y: np.ndarray, *, seed: int = 0) -> dict:
    """{temperature, ece_before, ece_after, log_loss_before, log_loss_after,
    log_loss_gain_se, examples}: T fitted on all of (logits, y), kept only where it lowers the
    cross-fitted log loss (the proper score T is fitted to; the binned ECE is reported but too
    noisy on a few hundred examples to decide by) by more than one standard error, else T = 1.
    Fewer than 4 examples: T = 1."""
    logits, y = np.asarray(logits, np.float64), np.asarray(y, np.int64)
    n = len(y)
    before = expected_calibration_error(_softmax(logits), y) if n else None
    if n < 4:
        return {"temperature": 1.0, "ece_before": before, "ece_after": before, "examples": n,
                "note": "too few validation examples to calibrate"}
    if no_mistakes(logits, y):
        return {"temperature": 1.0, "ece_before": round(before, 4), "ece_after": round(before, 4),
                "examples": n, "note": f"all {n} validation examples are right, so no temperature "
                "can be measured"}
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    after = np.zeros_like(logits)
    for fit, held in (halves, halves[::-1]):
        after[held] = logits[held] / fit_temperature(logits[fit], y[fit])
    loss_before, loss_after = _losses(logits, y), _losses(after, y)  # per example, cross-fitted
    gain = loss_before - loss_after
    se = float(gain.std(ddof=1) / np.sqrt(n))
    out = {"temperature": round(fit_temperature(logits, y), 4), "ece_before": round(before, 4),
           "ece_after": round(expected_calibration_error(_softmax(after), y), 4),
           "log_loss_before": round(float(loss_before.mean()), 4),
           "log_loss_after": round(float(loss_after.mean()), 4), "examples": n,
           "log_loss_gain_se": round(se, 4)}
    if not gain.mean() > se:
        out.update(temperature=1.0, ece_after=out["ece_before"],
                   log_loss_with_temperature=out["log_loss_after"],
                   log_loss_after=out["log_loss_before"],
                   note="a fitted temperature did not lower the cross-fitted log loss by more "
                        "than its standard error")
    return out


def describe_calibration(cal: dict) -> str:
    if cal.get("note") and "log_loss_before" not in cal:
        return f"calibration: {cal['note']}; probabilities are the model's own"
    if cal.get("note"):
        return (f"calibration: none kept ({cal['note']}: {cal['log_loss_before']:.3f} -> "
                f"{cal['log_loss_with_temperature']:.3f}, standard error "
                f"{cal['log_loss_gain_se']:.3f}, on {cal['examples']} validation examples); "
                "probabilities are the model's own")
    return (f"calibration: temperature {cal['temperature']:.2f} fitted on {cal['examples']} "
            f"validation examples; log loss {cal['log_loss_before']:.3f} -> "
            f"{cal['log_loss_after']:.3f}, expected calibration error {cal['ece_before']:.3f} "
            f"-> {cal['ece_after']:.3f} (both two-fold cross-fitted)")
