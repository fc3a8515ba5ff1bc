"""`--refit full`: validation chooses how long to train, then the plan is trained again from the
start on training + validation examples for exactly that long."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, history_rows, leftovers
from headstart import TrainConfig, api
from headstart.exceptions import ConfigError
from headstart.strategies import build_plan, selected_plan
from headstart.training import checkpoints, crossfit, loop
from headstart.training.refit import REFIT_CHECKPOINT

QUIET = dict(progress=False, log=lambda *_: None)
GROUPS = ("stem", "block1", "block2")


def _shape(plan):
    return [(p.name, p.epochs, p.cached) for p in plan.phases]


def test_selected_plan_cuts_every_strategy_at_the_chosen_epoch():
    ft = build_plan("fine_tune", GROUPS, epochs=5)
    assert _shape(selected_plan(ft, (1, 3))) == [("refit:head", 1, True),
                                                 ("refit:fine_tune", 3, False)]
    # the cut phase keeps the learning-rate schedule of the whole phase it replays
    assert selected_plan(ft, (1, 3)).phases[1].schedule_epochs == 5
    # the head alone won: the refit is the head alone, on every example
    assert _shape(selected_plan(ft, (0, 0))) == [("refit:head", 1, True)]
    gradual = build_plan("gradual", GROUPS, epochs=4)  # head, unfreeze_1, _2, _3 (2 epochs)
    assert _shape(selected_plan(gradual, (2, 1))) == [
        ("refit:head", 1, True), ("refit:unfreeze_1", 1, False), ("refit:unfreeze_2", 1, False)]
    assert _shape(selected_plan(gradual, (3, 2)))[-1] == ("refit:unfreeze_3", 2, False)
    # contrastive: the pair epochs validation chose, then the head that finishes the body
    con = build_plan("contrastive", GROUPS, epochs=5)
    assert _shape(selected_plan(con, (0, 2))) == [("refit:contrastive", 2, False),
                                                  ("refit:head", 1, True)]
    assert selected_plan(con, (0, 2)).phases[-1].fresh
    scratch = build_plan("scratch", GROUPS, epochs=6)
    assert _shape(selected_plan(scratch, (0, 4))) == [("refit:scratch", 4, False)]


def test_refit_mode_is_checked_and_old_boolean_settings_still_load():
    with pytest.raises(ConfigError, match="refit must be one of head, full, none, got 'all'"):
        TrainConfig(refit="all").validate()
    assert TrainConfig(refit=True).validate().refit == "head"
    assert TrainConfig(refit=False).validate().refit == "none"


def _train(data, out, strategy, refit):
    cfg = TrainConfig(backbone="tiny_cnn", strategy=strategy, input_size=32, epochs=3,
                      patience=10, refit=refit)
    return api.train(data, out, config=cfg, **QUIET)


# on this data fine_tune's validation prefers the head alone; scratch's, its last epoch
@pytest.mark.parametrize("strategy", ["fine_tune", "scratch"])
def test_refit_full_trains_again_on_train_and_val_for_the_chosen_epochs(tiny_data, tmp_path,
                                                                        monkeypatch, strategy):
    seen = []
    original = loop.Trainer.fit
    # the run's own fits are counted: no folds for the mix here (tests/test_crossfit.py)
    monkeypatch.setattr(crossfit, "CROSS_FIT_BELOW", 0)

    def fit(self, train, val, **kw):
        seen.append((len(train.y), len(val.y)))
        return original(self, train, val, **kw)
    monkeypatch.setattr(loop.Trainer, "fit", fit)
    kept = _train(tiny_data, tmp_path / "kept", strategy, "head")
    full = _train(tiny_data, tmp_path / "full", strategy, "full")
    n_train, n_val = kept.metrics["train_examples"], kept.metrics["val_examples"]
    if (kept.metrics.get("mix") or {}).get("alpha") == 0:  # the probe: nothing to train again
        assert seen == [(n_train, n_val), (n_train, n_val)]
        assert "refit_full" not in full.metrics
        a, b = full.model.state_dict(), kept.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        return
    assert seen == [(n_train, n_val), (n_train, n_val), (n_train + n_val, 0)]

    # the selection run is the same; its validation figures are the run's
    selection = [r for r in full.history if not r["phase"].startswith("refit:")]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa
    assert strip(selection) == strip(kept.history)
    assert full.metrics["val_accuracy"] == kept.metrics["val_accuracy"]
    assert full.metrics["epochs_run"] == kept.metrics["epochs_run"] == len(selection)

    # the refit re-runs what validation chose: every row up to the best one
    best = max(range(len(selection)), key=lambda i: (selection[i]["val_acc"],
                                                     -selection[i]["val_loss"]))
    refit = [(r["phase"], r["epoch"]) for r in full.history[len(selection):]]
    assert refit == [("refit:" + r["phase"], r["epoch"]) for r in selection[:best + 1]]
    assert full.metrics["refit_full"]["examples"] == n_train + n_val
    assert full.metrics["refit_full"]["epochs"] == best + 1
    assert not any("val_acc" in r for r in full.history[len(selection):])

    # the saved model is the refitted one, and history.csv holds both runs
    saved = load_file(str(tmp_path / "full" / "model.safetensors"))
    state = full.model.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert not all(torch.equal(saved[k], kept.model.state_dict()[k]) for k in saved)
    assert [r["phase"] for r in history_rows(tmp_path / "full")] == \
        [r["phase"] for r in full.history]
    assert (tmp_path / "full" / "history.png").stat().st_size > 0  # refit rows without val
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["refit_full"]["examples"] == n_train + n_val


def test_a_phase_cut_short_replays_the_rates_of_the_epochs_it_keeps(tiny_data, monkeypatch):
    """Validation keeps epoch 2 of 4: the refit trains 2 epochs at the rates those 2 epochs had
    (one step an epoch on this data, so the rates match exactly), not a schedule squeezed into 2."""
    original = loop.Trainer.fit

    def fit(self, train, val, **kw):
        rows = original(self, train, val, **kw)
        if len(val.y):
            self.best_at = (0, 2)
        return rows
    monkeypatch.setattr(loop.Trainer, "fit", fit)
    cfg = TrainConfig(backbone="tiny_cnn", strategy="scratch", input_size=32, epochs=4,
                      patience=10, refit="full")
    rows = api.train(tiny_data, config=cfg, **QUIET).history
    assert [(r["phase"], r["epoch"]) for r in rows[4:]] == [("refit:scratch", 1),
                                                            ("refit:scratch", 2)]
    assert [r["lr"] for r in rows[4:]] == pytest.approx([r["lr"] for r in rows[:2]])
    assert rows[5]["lr"] > 0.5 * rows[0]["lr"]  # mid-schedule, not annealed to zero


def test_refit_full_changes_nothing_for_a_probe(tiny_data):
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32, refit="full")
    trained = api.train(tiny_data, config=cfg, **QUIET)
    assert "refit_full" not in trained.metrics  # its head was refitted on every example already
    assert trained.metrics["head_refit_on"] == 16


def test_refit_full_of_contrastive_on_texts(articles):
    texts, labels = articles
    trained = api.train(texts, labels=labels, config=TrainConfig(
        backbone="tiny_text", strategy="contrastive", epochs=2, lr=1e-3, patience=10,
        refit="full"), **QUIET)
    phases = [r["phase"] for r in trained.history]
    assert phases[:3] == ["contrastive", "contrastive", "head"]
    assert phases[3:-1] and set(phases[3:-1]) == {"refit:contrastive"}
    assert phases[-1] == "refit:head"
    assert trained.metrics["refit_full"]["examples"] == len(texts)
    assert trained.metrics["val_accuracy"] == pytest.approx(trained.history[2]["val_acc"])
    assert np.isfinite(trained.history[-1]["train_loss"])


def test_old_runs_settings_still_resume_and_load(tmp_path):
    from headstart.training.config import upgrade
    from headstart.training.rundir import RunWriter
    assert upgrade({"refit": True, "seed": 1}) == {"refit": "head", "seed": 1}
    assert TrainConfig.from_dict({"refit": False}).refit == "none"
    old = RunWriter(tmp_path / "run")
    old.open({"strategy": "fine_tune", "refit": True})  # as written before refit had modes
    ckpt = {"phase": 0, "epoch": 1, "model": {}, "history": []}
    old.save_checkpoint(ckpt)
    assert RunWriter(tmp_path / "run").open({"strategy": "fine_tune", "refit": "head"}) == ckpt


def test_a_resumed_contrastive_refit_keeps_honest_validation_figures(articles, tmp_path,
                                                                     monkeypatch):
    """The validation figures of a head that is then refitted on validation examples come from
    before that refit, after a resume too."""
    texts, labels = articles
    cfg = TrainConfig(backbone="tiny_text", strategy="contrastive", epochs=2, lr=1e-3,
                      patience=10, refit="full")
    straight = api.train(texts, tmp_path / "straight", labels=labels, config=cfg, **QUIET)
    original = loop.Trainer._end_epoch

    def end_epoch(self, pi, *a, **kw):  # interrupted in the refit's first epoch
        stop = original(self, pi, *a, **kw)
        if self.plan.phases[pi].name.startswith("refit:"):
            monkeypatch.setattr(loop.Trainer, "_end_epoch", original)
            raise KeyboardInterrupt
        return stop
    monkeypatch.setattr(loop.Trainer, "_end_epoch", end_epoch)
    with pytest.raises(KeyboardInterrupt):
        api.train(texts, tmp_path / "ft", labels=labels, config=cfg, **QUIET)
    resumed = api.train(texts, tmp_path / "ft", labels=labels, config=cfg, **QUIET)
    for key in ("val_accuracy", "head_refit_on", "val"):
        assert resumed.metrics[key] == straight.metrics[key]


def test_an_interrupted_refit_resumes_where_it_stopped(cli, tiny_data, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    args = ["--strategy", "scratch", "--epochs", "3", "--patience", "10", "--refit", "full",
            *TINY]
    original = loop.Trainer._end_epoch
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", 0)  # every epoch checkpointed

    def end_epoch(self, pi, *a, **kw):  # stop after the refit's second epoch is checkpointed
        stop = original(self, pi, *a, **kw)
        if self.plan.phases[pi].name.startswith("refit:") and len(self.history) >= 2:
            monkeypatch.setattr(loop.Trainer, "_end_epoch", original)
            raise KeyboardInterrupt
        return stop
    monkeypatch.setattr(loop.Trainer, "_end_epoch", end_epoch)
    assert cli("train", tiny_data, "--out", runs / "ft", *args).rc == 130
    assert (runs / ".ft.partial" / REFIT_CHECKPOINT).is_file()

    r = cli("train", tiny_data, "--out", runs / "ft", *args)
    assert r.rc == 0, r
    assert "resuming the interrupted refit (2 epoch(s) done)" in r.out
    assert "the saved model was then trained on all 16" in r.out
    assert leftovers(runs) == ["ft"] and not list((runs / "ft").glob("*checkpoint*"))
    assert cli("train", tiny_data, "--out", runs / "straight", *args).rc == 0
    strip = lambda run: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                         for r in history_rows(run)]
    assert strip(runs / "ft") == strip(runs / "straight")
    a = load_file(str(runs / "ft" / "model.safetensors"))
    b = load_file(str(runs / "straight" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("data", ["images", "texts"])
def test_refit_full_of_a_kept_probe_trains_nothing_again(tiny_data, articles, monkeypatch, data):
    """Where the mix keeps 0 (the probe, its head refitted on every example), `--refit full`
    trains nothing again: the model is the `--refit head` run's, weight for weight, and the
    linear probe's."""
    from headstart.training import mixing
    monkeypatch.setattr(loop, "choose_mix",
                        lambda *a, **kw: mixing.choose_mix(*a, **{**kw, "alphas": (0.0,)}))
    if data == "images":
        inputs, kw = tiny_data, dict(backbone="tiny_cnn", input_size=32, epochs=2)
    else:
        inputs, kw = articles[0], dict(backbone="tiny_text", epochs=1, lr=1e-3, val_fraction=0.3)
    labels = None if data == "images" else articles[1]
    runs = {refit: api.train(inputs, labels=labels, config=TrainConfig(
        strategy="auto", refit=refit, **kw), **QUIET) for refit in ("head", "full")}
    probe = api.train(inputs, labels=labels, config=TrainConfig(strategy="linear_probe", **kw),
                      **QUIET)
    full = runs["full"]
    assert full.metrics["mix"]["alpha"] == 0 and "refit_full" not in full.metrics
    assert not any(r["phase"].startswith("refit:") for r in full.history)
    for other in (runs["head"], probe):
        a, b = full.model.state_dict(), other.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
