"""Plots (matplotlib, Agg: no screen needed): PNG files for a run (confusion matrix, training
curves) and the figures of `headstart compare`'s report (returned as matplotlib figures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ARM_NAMES = {"probe": "frozen probe", "transfer": "transfer", "scratch": "from scratch"}
COLOURS = {"probe": "#8250df", "transfer": "#0969da", "scratch": "#bc4c00"}


def _pyplot():  # deferred on purpose: matplotlib takes a second to import, for plots only
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(report: dict, path: str | Path, *, title: str = "Confusion matrix") -> Path:
    plt = _pyplot()
    classes = report["classes"]
    cm = np.asarray(report["confusion_matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {report['accuracy']:.3f}, n={report['n']})")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(rows: list[dict], path: str | Path) -> Path:
    """Training curves, one point per epoch of every phase in order. Phase changes get a
    dotted line and the phase's name; the epochs of a `--refit full` re-run (phases named
    `refit:*`, trained on training + validation examples, so without validation figures) are
    shaded and drawn with their own marker, so they are not read as more epochs of the run."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator  # deferred, as _pyplot
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(1, len(rows) + 1)
    phases = [str(r.get("phase") or "") for r in rows]
    refit = np.array([p.startswith("refit:") for p in phases], dtype=bool)
    starts = [i for i in range(len(rows)) if i == 0 or phases[i] != phases[i - 1]]
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            ys = np.array([float(v) if v not in (None, "") else np.nan
                           for v in (r.get(f"{split}_{key}") for r in rows)])
            for part, marker, label in ((~refit, "o-", split),
                                        (refit, "s--", f"{split} (refit on train + val)")):
                if np.isfinite(ys[part]).any():
                    ax.plot(x[part], ys[part], marker, label=label,
                            color="#0969da" if split == "train" else "#bc4c00")
        if refit.any():
            ax.axvspan(x[refit].min() - 0.5, x[refit].max() + 0.5, color="#57606a", alpha=0.08)
        if len(starts) > 1:
            for i in starts:
                ax.axvline(i + 0.5, color="#57606a", ls=":", lw=0.8)
                ax.annotate(phases[i], (i + 0.6, 1.0), xycoords=("data", "axes fraction"),
                            va="top", fontsize=7, color="#57606a", rotation=90)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (all phases, in order)")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# -- the figures of the compare report --------------------------------------------------
def curves_figure(d: dict, arms: list[str]):
    plt = _pyplot()
    fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for a in arms:
        rows = d["arms"][a].get("history") or []
        acc = [np.nan if r.get("val_acc") in (None, "") else float(r["val_acc"]) for r in rows]
        secs = np.cumsum([float(r.get("seconds") or 0) for r in rows])
        style = dict(color=COLOURS.get(a), label=ARM_NAMES.get(a, a), marker="o",
                     ms=3 if len(rows) > 1 else 8, zorder=3 if len(rows) == 1 else 2)
        ax_e.plot(np.arange(1, len(rows) + 1), acc, **style)
        ax_s.plot(secs, acc, **style)
    target = (d.get("target") or {}).get("accuracy")
    for ax, xlabel in ((ax_e, "epoch (all phases, in order)"), (ax_s, "wall seconds")):
        if target is not None:
            ax.axhline(target, color="#57606a", ls="--", lw=1, label="target")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_e.set_ylabel("validation accuracy")
    ax_e.legend(fontsize=8)
    return fig


def accuracy_figure(d: dict, arms: list[str]):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(arms) + 1.6))
    for i, a in enumerate(arms):
        r = d["arms"][a]
        lo, hi = r.get("ci") or (r["accuracy"], r["accuracy"])
        ax.errorbar(r["accuracy"], i, xerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]],
                    fmt="o", color=COLOURS.get(a), capsize=5, ms=8)
        seeds = r.get("seed_accuracies") or []
        ax.plot(seeds, [i + 0.18] * len(seeds), "|", color=COLOURS.get(a), ms=10)
    z = (d.get("zero_shot") or {}).get("accuracy")
    if z is not None:
        ax.axvline(z, color="#57606a", ls=":", label="zero-shot")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(range(len(arms)), [ARM_NAMES.get(a, a) for a in arms])
    ax.set_ylim(len(arms) - 0.4, -0.6)  # first arm on top, as in the table
    ax.set_xlabel("test accuracy (dot: estimate, bar: 95% CI, ticks: single seeds)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def label_curve_figure(lc: dict):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for a in ("transfer", "scratch"):
        ax.plot(lc["shots"], lc[a], "o-", color=COLOURS[a], label=ARM_NAMES[a])
    ax.set_xscale("log")
    ax.set_xticks(lc["shots"], lc.get("labels") or [f"{x:g}" for x in lc["shots"]])
    ax.minorticks_off()
    ax.axhline(lc["transfer"][0], color="#57606a", ls="--", lw=1,
               label="transfer with the fewest labels")
    if lc.get("scratch_shots") and not lc.get("lower_bound"):
        ax.axvline(lc["scratch_shots"], color=COLOURS["scratch"], ls=":", lw=1)
    ax.set_xlabel("labelled examples per class (log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def confusions_figure(d: dict, arms: list[str]):
    plt = _pyplot()
    names = [str(c).replace("$", r"\$") for c in d["classes"]]  # no mathtext from class names
    k = len(names)
    side = min(max(3.2, 0.35 * k + 1.8), 9.0)
    names = names if k <= 40 else [""] * k  # too many to read: the colours tell
    fig, axes = plt.subplots(1, len(arms), figsize=(side * len(arms), side), squeeze=False)
    for ax, a in zip(axes[0], arms):
        cm = np.asarray(d["arms"][a]["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), names if ax is axes[0][0] else [""] * k, fontsize=7)
        ax.set_title(ARM_NAMES.get(a, a), color=COLOURS.get(a))
        ax.set_xlabel("predicted")
        if k <= 15:
            for (i, j), v in np.ndenumerate(cm):
                if v:
                    ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    axes[0][0].set_ylabel("true")
    return fig
