"""Plots (matplotlib, Agg: no screen needed): PNG files for a run (confusion matrix, training
curves) and the figures of `headstart compare`'s report (returned as matplotlib figures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ARM_NAMES = {"probe": "frozen probe", "transfer": "transfer", "scratch": "from scratch",
             "classic": "classic model"}
COLOURS = {"probe": "#8250df", "transfer": "#0969da", "scratch": "#bc4c00",
           "classic": "#1b7c83"}


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
    """Training curves, one point per epoch of every phase in order, each phase drawn as what
    it is: gradient epochs as a line per phase (never joined across phases); a head fitted in
    closed form on cached features (a row without a learning rate, or marked "cached") as a
    lone diamond, since it is one solve, not an epoch of the line; the epochs of a
    `--refit full` re-run (phases named `refit:*`, trained on training + validation examples,
    so without validation figures) dashed, with square markers, on a shaded band. Phase names
    sit above the plot, one per phase, between dotted separators."""
    plt = _pyplot()
    fig = history_figure(rows)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def history_figure(rows: list[dict]):
    """The figure of `plot_history`."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    phases = [str(r.get("phase") or "") for r in rows]
    segments = _segments(rows, phases)
    for key, ax in zip(("loss", "acc"), axes):
        drawn: set[str] = set()
        for run in _runs(segments):
            for split in ("train", "val"):
                _draw_segment(ax, rows, run, split, key, drawn)
        refit = [i for s in segments if s["refit"] for i in s["idx"]]
        if refit:
            ax.axvspan(min(refit) + 0.5, max(refit) + 1.5, color="#57606a", alpha=0.08)
        _phase_labels(ax, segments)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.set_xlabel("epoch (all phases, in order)")
        ax.set_ylabel(key)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _segments(rows: list[dict], phases: list[str]) -> list[dict]:
    """Runs of consecutive rows of one phase: their indices, name, and what kind they are."""
    out: list[dict] = []
    for i, name in enumerate(phases):
        if out and out[-1]["name"] == name:
            out[-1]["idx"].append(i)
            continue
        r = rows[i]
        cached = r.get("cached", r.get("lr") in (None, "")) and "pair_loss" not in r
        out.append({"name": name, "idx": [i], "cached": bool(cached),
                    "refit": name.startswith("refit:")})
    return out


def _runs(segments: list[dict]) -> list[dict]:
    """What is drawn as one line: consecutive phases of gradient epochs (gradual's one-epoch
    phases continue one training run) join; a cached head fit always stands alone."""
    out: list[dict] = []
    for seg in segments:
        prev = out[-1] if out else None
        if prev and not seg["cached"] and not prev["cached"] and seg["refit"] == prev["refit"]:
            prev["idx"] = prev["idx"] + seg["idx"]
        else:
            out.append(dict(seg))
    return out


_SPLIT_COLOUR = {"train": "#0969da", "val": "#bc4c00"}


def _draw_segment(ax, rows, seg, split: str, key: str, drawn: set) -> None:
    idx = seg["idx"]
    ys = np.array([_num(rows[i].get(f"{split}_{key}")) for i in idx])
    if not np.isfinite(ys).any():
        return
    x = np.array(idx) + 1
    if seg["cached"]:
        style, label = dict(marker="D", ls="none", ms=7), f"{split} (head fit on cached features)"
    elif seg["refit"]:
        style, label = dict(marker="s", ls="--"), f"{split} (refit on train + val)"
    else:
        style, label = dict(marker="o", ls="-", ms=4), f"{split} (gradient epochs)"
    ax.plot(x, ys, color=_SPLIT_COLOUR[split], label=None if label in drawn else label, **style)
    drawn.add(label)


def _phase_labels(ax, segments: list[dict]) -> None:
    if len(segments) < 2:
        return
    many = len(segments) > 4
    for seg in segments:
        lo, hi = seg["idx"][0] + 1, seg["idx"][-1] + 1
        if seg is not segments[0]:
            ax.axvline(lo - 0.5, color="#57606a", ls=":", lw=0.8)
        ax.annotate(seg["name"], ((lo + hi) / 2, 1.01), xycoords=("data", "axes fraction"),
                    ha="left" if many else "center", va="bottom", fontsize=7, color="#57606a",
                    rotation=45 if many else 0, annotation_clip=False)


def _num(v) -> float:
    return float(v) if v not in (None, "") else np.nan


# -- the figures of the compare report --------------------------------------------------
def curves_figure(d: dict, arms: list[str]):
    plt = _pyplot()
    fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for a in arms:
        rows = d["arms"][a].get("history") or []
        acc = [np.nan if r.get("val_acc") in (None, "") else float(r["val_acc"]) for r in rows]
        secs = np.cumsum([float(r.get("seconds") or 0) for r in rows])
        if d["arms"][a].get("strategy") == "classic":  # one fit, no epochs: a level, a point
            if rows and np.isfinite(acc[-1]):
                ax_e.axhline(acc[-1], color=COLOURS.get(a), ls=":", lw=1.5,
                             label=f"{ARM_NAMES.get(a, a)} (one fit, no epochs)")
                ax_s.plot(secs[-1:], acc[-1:], "*", color=COLOURS.get(a), ms=12, zorder=3,
                          label=ARM_NAMES.get(a, a))
            continue
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
    handles, labels = ax_e.get_legend_handles_labels()
    more = [(h, lb) for h, lb in zip(*ax_s.get_legend_handles_labels()) if lb not in labels]
    fig.legend(handles + [h for h, _ in more], labels + [lb for _, lb in more], fontsize=8,
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
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
    for a in ("transfer", "classic", "scratch"):
        if lc.get(a):
            ax.plot(lc["shots"], lc[a], "o-", color=COLOURS[a], label=ARM_NAMES[a])
    ax.set_xscale("log")
    ax.set_xticks(lc["shots"], lc.get("labels") or [f"{x:g}" for x in lc["shots"]])
    ax.minorticks_off()
    ax.axhline(lc["transfer"][0], color="#57606a", ls="--", lw=1,
               label="transfer with the fewest labels")
    if lc.get("scratch_shots") and not lc.get("lower_bound"):  # where the reference gets there
        ax.axvline(lc["scratch_shots"], color=COLOURS.get(lc.get("reference"), "#bc4c00"),
                   ls=":", lw=1)
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
