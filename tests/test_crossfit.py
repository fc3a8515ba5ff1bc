"""The mix decided on folds where validation is small (training/crossfit.py): the folds, the
pooled one-standard-error rule, and a run that uses them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart import api
from headstart.data.datasets import LabelledData
from headstart.training import TrainConfig
from headstart.training import crossfit
from headstart.training.batches import Split
from headstart.training.mixing import choose_mix

QUIET = dict(progress=False, log=lambda *_: None)


def _split(y, offset=0):
    y = np.asarray(y)
    ds = LabelledData([f"x{offset + i}" for i in range(len(y))], [str(v) for v in y])
    return Split(ds, y, np.arange(offset, offset + len(y), dtype=np.float32)[:, None, None])


def test_the_folds_hold_out_every_training_example_once_and_keep_validation_to_train():
    train, val = _split([0] * 9 + [1] * 6 + [2] * 5), _split([0, 1, 2, 0], offset=100)
    folds = crossfit.folds_of(train, val, seed=0)
    assert len(folds) == crossfit.FOLDS
    held = [int(v) for _, h in folds for v in h.features.ravel()]
    assert sorted(held) == list(range(20))  # each training example held out exactly once
    for tr, h in folds:
        names = set(tr.ds.sources)
        assert {f"x{i}" for i in range(100, 104)} <= names  # the run's validation trains
        assert not names & set(h.ds.sources)
        assert len(tr.y) + len(h.y) == 24 and set(np.unique(h.y)) == {0, 1, 2}  # stratified
        assert [str(v) for v in h.y] == h.ds.labels and np.array_equal(
            h.features.ravel().astype(int), [int(s[1:]) for s in h.ds.sources])
    # a class with one training example: no folds (each needs it on both sides)
    assert crossfit.folds_of(_split([0, 0, 0, 1]), _split([0, 1], 10), seed=0) == []


def _flags(n, right):
    r = np.zeros(n, dtype=bool)
    r[:right] = True
    return r


def test_evidence_from_more_folds_lets_a_consistent_gain_through():
    """Tuned one example ahead on each fold of 10: within one standard error on the run's own
    10 validation examples (the probe kept), clearly ahead on the 50 of five folds."""
    model = torch.nn.Linear(2, 2)
    start = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    end = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    right = {0.0: 8, 1.0: 9}
    validate = lambda a: {"val_acc": right[a] / 10, "val_loss": 1.0 - a / 10,  # noqa: E731
                          "right": _flags(10, right[a])}
    alpha, _ = choose_mix(model, start, end, validate, alphas=(0.0, 1.0))
    assert alpha == 0.0
    fold = {a: {"right": _flags(10, right[a]), "val_loss": 1.0} for a in (0.0, 1.0)}
    alpha, rows = choose_mix(model, start, end, validate, alphas=(0.0, 1.0), more=[fold] * 4)
    assert alpha == 1.0 and [r["examples"] for r in rows] == [50, 50]
    assert [r["val_acc"] for r in rows] == [0.8, 0.9]
    assert rows[0]["val_loss"] == pytest.approx(1.0) and rows[1]["val_loss"] == pytest.approx(0.98)


def test_a_run_with_a_small_validation_split_decides_its_mix_on_every_example(tiny_data,
                                                                                tmp_path):
    lines = []
    cfg = TrainConfig(backbone="tiny_cnn", strategy="fine_tune", input_size=32, epochs=2)
    state = torch.random.get_rng_state()
    r = api.train(tiny_data, tmp_path / "run", config=cfg, progress=False, log=lines.append)
    mix = r.metrics["mix"]
    pool = r.metrics["train_examples"] + r.metrics["val_examples"]
    assert mix["examples"] == pool and mix["folds"] == 1 + len(
        [line for line in lines if line.startswith("  fold ")])
    assert all(row["examples"] == pool for row in mix["mixes"])
    assert any(f"so that each mix is judged on all {pool}" in line for line in lines), lines
    assert any(f"more folds ({pool} examples)" in line for line in lines), lines
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["mix"] == mix
    # the same run again: the same model (the folds leave the random state as it was)
    torch.random.set_rng_state(state)
    again = api.train(tiny_data, config=cfg, **QUIET)
    assert all(torch.equal(a, b) for a, b in zip(r.model.state_dict().values(),
                                                 again.model.state_dict().values()))


def test_no_folds_where_validation_is_large_enough_or_pairs_decide(tiny_data, monkeypatch):
    from types import SimpleNamespace
    small = _split([0, 1, 0, 1])
    run = SimpleNamespace(plan=SimpleNamespace(mix=True), pairs=False, mix_alpha=None)
    assert crossfit.eligible(run, small)
    assert not crossfit.eligible(SimpleNamespace(**{**vars(run), "pairs": True}), small)
    assert not crossfit.eligible(SimpleNamespace(**{**vars(run), "mix_alpha": 0.5}), small)
    assert not crossfit.eligible(run, _split([]))
    monkeypatch.setattr(crossfit, "CROSS_FIT_BELOW", 2)
    r = api.train(tiny_data, config=TrainConfig(backbone="tiny_cnn", strategy="fine_tune",
                                                input_size=32, epochs=1), **QUIET)
    assert "folds" not in r.metrics["mix"] and "examples" not in r.metrics["mix"]["mixes"][0]
