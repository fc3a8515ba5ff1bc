"""history.png draws each phase as what it is: a head fitted on cached features is a lone
marker, never joined to the line of gradient epochs; phase names sit above the plot, whole."""
from __future__ import annotations

import numpy as np

from headstart.evaluation.plots import _pyplot, history_figure, plot_history

ROWS = ([{"phase": "head", "epoch": 1, "train_loss": 0.0025, "train_acc": 1.0, "val_loss": 0.4,
          "val_acc": 0.8, "seconds": 0.3, "lr": ""}]
        + [{"phase": "fine_tune", "epoch": e, "train_loss": 0.9 - 0.1 * e, "train_acc": 0.7,
            "val_loss": 0.6, "val_acc": 0.8, "seconds": 40.0, "lr": 1e-3} for e in (1, 2, 3)])


def test_a_cached_head_fit_is_a_lone_marker_and_phase_names_are_whole(tmp_path):
    fig = history_figure(ROWS)
    loss = fig.axes[0]
    drawn = [(ln.get_xdata().tolist(), ln.get_marker(), ln.get_linestyle())
             for ln in loss.get_lines() if ln.get_marker() not in ("None", "")]
    assert ([1], "D", "None") in drawn  # the head fit: one diamond, no line
    assert ([2, 3, 4], "o", "-") in drawn  # the gradient epochs: their own line
    assert not [x for x, _, _ in drawn if 1 in x and len(x) > 1]  # never joined to the head
    names = [t for t in loss.texts if t.get_text() in ("head", "fine_tune")]
    assert sorted(t.get_text() for t in names) == ["fine_tune", "head"]
    fig.canvas.draw()
    box = loss.get_window_extent()
    for t in names:  # above the plotting area, and inside the saved figure
        ext = t.get_window_extent()
        assert ext.y0 >= box.y1 - 1 and ext.y1 <= fig.bbox.y1 + 40
    _pyplot().close(fig)
    path = plot_history(ROWS, tmp_path / "history.png")
    from PIL import Image
    with Image.open(path) as im:
        w, h = im.size
        top = np.asarray(im.convert("L"))[:3]
    assert w > 500 and h > 300 and top.min() > 200  # nothing drawn against the top edge


def test_gradual_phases_of_gradient_epochs_make_one_line():
    rows = [ROWS[0]] + [{**ROWS[1], "phase": f"unfreeze_{i}", "epoch": 1} for i in (1, 2, 3)]
    fig = history_figure(rows)
    drawn = [ln.get_xdata().tolist() for ln in fig.axes[1].get_lines()
             if ln.get_marker() not in ("None", "")]
    assert [2, 3, 4] in drawn and [1] in drawn
    _pyplot().close(fig)
