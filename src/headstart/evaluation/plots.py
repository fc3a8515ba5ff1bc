"""PNG plots: confusion matrix and training curves (matplotlib, no screen needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
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
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = list(range(1, len(rows) + 1))
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            ys = [r.get(f"{split}_{key}") for r in rows]
            if any(v not in (None, "") for v in ys):
                ax.plot(x, [float(v) if v not in (None, "") else np.nan for v in ys], "o-",
                        label=split)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (all phases, in order)")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
