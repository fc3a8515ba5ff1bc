"""Training through the CLI and the library: complete run directories for every strategy,
loading and predicting, evaluation, resume after an interruption, and seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY, history_rows, leftovers
from headstart import RunDirError, TrainConfig, api, create_backbone
from headstart.training import checkpoints, loop
from headstart.training.rundir import RUN_FILES

# history rows per strategy for the epochs the session fixture trains with
EXPECTED_ROWS = {
    "linear_probe": [("head", "1")],
    "fine_tune": [("head", "1"), ("fine_tune", "1"), ("fine_tune", "2")],
    "gradual": [("head", "1"), ("unfreeze_1", "1"), ("unfreeze_2", "1"), ("unfreeze_3", "1"),
                ("unfreeze_3", "2")],
    "scratch": [("scratch", "1"), ("scratch", "2")],
}


@pytest.mark.parametrize("strategy", list(EXPECTED_ROWS))
def test_run_directory_is_complete(tiny_runs, strategy):
    run = tiny_runs[strategy]
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()
    assert not (run.parent / f".{run.name}.partial").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["strategy"] == strategy and config["backbone"] == "tiny_cnn"
    assert config["input_size"] == 32
    assert json.loads((run / "labels.json").read_text()) == ["a", "b"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["strategy"] == strategy
    assert metrics["train_examples"] + metrics["val_examples"] == 16
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert set(metrics["val"]["per_class"]) == {"a", "b"}
    rows = history_rows(run)
    assert [(r["phase"], r["epoch"]) for r in rows] == EXPECTED_ROWS[strategy]
    assert metrics["epochs_run"] == len(rows)
    state = load_file(str(run / "model.safetensors"))
    assert state["head.fc.weight"].shape == (2, 32)
    assert any(k.startswith("backbone.stem") for k in state)


@pytest.mark.parametrize("strategy", list(EXPECTED_ROWS))
def test_run_loads_and_predicts(tiny_runs, tiny_data, strategy):
    trained = api.load(tiny_runs[strategy])
    assert trained.classes == ["a", "b"] and trained.config.strategy == strategy
    assert not trained.model.training
    images = [tiny_data / "a" / "0.png", tiny_data / "b" / "0.png"]
    results = api.predict(trained, images, top=2)
    assert len(results) == 2
    for top in results:
        assert sorted(n for n, _ in top) == ["a", "b"]
        assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)
        assert top[0][1] >= top[1][1]


@pytest.mark.parametrize("strategy", ["linear_probe", "fine_tune", "gradual"])
def test_transfer_strategies_learn_the_pattern(tiny_runs, tiny_data, strategy):
    """The tiny data are separable on tiny_cnn's fixed features: a trained run gets them right."""
    report, skipped = api.evaluate(api.load(tiny_runs[strategy]), tiny_data, progress=False)
    assert skipped == []
    assert report["n"] == 16 and report["accuracy"] >= 0.9


def test_predict_cli_with_run(cli, tiny_runs, tiny_data):
    imgs = [tiny_data / "a" / "1.png", tiny_data / "b" / "1.png"]
    r = cli("predict", "--run", tiny_runs["linear_probe"], *imgs, "--json")
    assert r.rc == 0, r
    out = r.json()
    assert [o["image"] for o in out] == [str(i) for i in imgs]
    assert [o["top"][0]["label"] for o in out] == ["a", "b"]
    r = cli("predict", "--run", tiny_runs["linear_probe"], imgs[0])
    assert r.rc == 0 and "1. a" in r.out


def test_predict_a_folder_of_images(cli, tiny_runs, tiny_data, tmp_path):
    """A folder stands for the image files under it, sorted, sub-folders too; what else it
    holds is named on stderr; a folder without images is a one-line error."""
    import shutil
    shutil.copytree(tiny_data / "a", tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"")
    (tmp_path / "photos" / "more").mkdir()
    shutil.copy(tiny_data / "b" / "1.png", tmp_path / "photos" / "more" / "b1.png")
    r = cli("predict", "--run", tiny_runs["linear_probe"], tmp_path / "photos", "--json")
    assert r.rc == 0, r
    shown = [o["image"] for o in r.json()]
    expected = sorted(str(p) for p in (tmp_path / "photos").glob("*.png"))
    assert shown == expected + [str(tmp_path / "photos" / "more" / "b1.png")]
    assert f"not read: 1 other entry ({tmp_path / 'photos' / 'notes.txt'}); 1 hidden or " \
        "system file(s)" in r.err
    (tmp_path / "empty").mkdir()
    line = cli("predict", "--run", tiny_runs["linear_probe"], tmp_path / "empty").one_line_error()
    assert "a folder holding no image files" in line


def test_evaluate_cli_json(cli, tiny_runs, make_folder):
    run = tiny_runs["linear_probe"]
    data = make_folder("heldout", n=5)
    r = cli("evaluate", run, data, "--json")
    assert r.rc == 0, r
    report = r.json()  # the whole of stdout is one JSON object
    assert report["n"] == 10 and report["accuracy"] >= 0.8
    assert set(report["per_class"]) == {"a", "b"}
    assert {"precision", "recall", "f1", "support"} <= set(report["per_class"]["a"])
    assert sum(map(sum, report["confusion_matrix"])) == 10
    png = run / "confusion_heldout.png"
    assert report["confusion_png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_cli_text(cli, tiny_runs, make_folder, tmp_path):
    plot = tmp_path / "cm.png"
    r = cli("evaluate", tiny_runs["scratch"], make_folder(n=3), "--plot", plot)
    assert r.rc == 0, r
    assert "accuracy" in r.out and "precision" in r.out and str(plot) in r.out
    assert plot.is_file()


def test_fine_tune_unfreeze_one_changes_only_the_top_group(tiny_data, tmp_path):
    cfg = TrainConfig(backbone="tiny_cnn", strategy="fine_tune", input_size=32, epochs=1,
                      unfreeze="1", val_fraction=0.0, lr=1e-2)
    result = api.train(tiny_data, tmp_path / "run", config=cfg, progress=False,
                       log=lambda *_: None)
    assert result.metrics["val_accuracy"] is None
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    source = create_backbone("tiny_cnn").state_dict()
    for k, v in source.items():
        if k.startswith("fc."):
            continue
        same = torch.equal(saved["backbone." + k], v)
        if k.startswith(("stem.", "block1.")) or "running_" in k or "num_batches" in k:
            assert same, k  # frozen groups, and every BatchNorm statistic (auto: keep)
    assert not torch.equal(saved["backbone.block2.0.weight"], source["block2.0.weight"])


# -- resume -----------------------------------------------------------------------------------

FT3 = ["--strategy", "fine_tune", "--epochs", "3", "--patience", "5", *TINY]


@pytest.fixture
def interrupt_after(monkeypatch):
    """interrupt_after(n): the next training raises KeyboardInterrupt once n history rows
    are recorded (after the checkpoint of that epoch is written)."""
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", 0)  # every epoch checkpointed

    def arm(n: int) -> None:
        original = loop.Trainer._end_epoch

        def end_epoch(self, *args, **kwargs):
            stop = original(self, *args, **kwargs)
            if len(self.history) >= n:
                monkeypatch.setattr(loop.Trainer, "_end_epoch", original)
                raise KeyboardInterrupt
            return stop
        monkeypatch.setattr(loop.Trainer, "_end_epoch", end_epoch)
    return arm


def _rows(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history_rows(run)]


def test_interrupted_run_resumes(cli, tiny_data, tmp_path, interrupt_after):
    runs = tmp_path / "runs"
    out, partial = runs / "ft", runs / ".ft.partial"
    interrupt_after(2)  # the head phase and fine_tune epoch 1 of 3
    r = cli("train", tiny_data, "--out", out, *FT3)
    assert r.rc == 130 and "run the same command again to resume" in r.err
    assert not out.exists()
    assert (partial / "checkpoint.pt").is_file()
    assert [(x["phase"], x["epoch"]) for x in history_rows(partial)] == \
        [("head", "1"), ("fine_tune", "1")]

    # other settings: refused, and the interrupted run is kept
    line = cli("train", tiny_data, "--out", out, *FT3, "--lr", "0.01").one_line_error()
    assert str(partial) in line and "lr" in line and "--restart" in line
    assert (partial / "checkpoint.pt").is_file() and not out.exists()

    r = cli("train", tiny_data, "--out", out, *FT3)
    assert r.rc == 0, r
    assert "resuming" in r.out and "2 epoch(s) done" in r.out
    assert leftovers(runs) == ["ft"]
    assert not (out / "checkpoint.pt").exists()
    resumed = _rows(out)
    assert [(x["phase"], x["epoch"]) for x in resumed] == \
        [("head", "1"), ("fine_tune", "1"), ("fine_tune", "2"), ("fine_tune", "3")]
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 4

    # the resumed run is the run that was never interrupted
    r = cli("train", tiny_data, "--out", runs / "straight", *FT3)
    assert r.rc == 0, r
    assert _rows(runs / "straight") == resumed
    a = load_file(str(out / "model.safetensors"))
    b = load_file(str(runs / "straight" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_short_epochs_are_checkpointed_at_phase_ends_and_resume_to_the_same_model(
        cli, tiny_data, tmp_path, interrupt_after, monkeypatch):
    """Where writing a checkpoint takes longer than a tenth of the work since the last one
    (here: always), only phase ends are checkpointed; a run interrupted in mid-phase goes on
    from the last phase end, to the model of the run never interrupted."""
    runs = tmp_path / "runs"
    interrupt_after(3)  # the head phase and fine_tune epochs 1 and 2 of 3
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", 1e9)
    saved = []
    original = loop.RunWriter.save_checkpoint
    monkeypatch.setattr(loop.RunWriter, "save_checkpoint",
                        lambda self, state, *a: saved.append((state["phase"], state["epoch"]))
                        or original(self, state, *a))
    assert cli("train", tiny_data, "--out", runs / "ft", *FT3).rc == 130
    assert saved == [(1, 0)] and len(history_rows(runs / ".ft.partial")) == 3
    r = cli("train", tiny_data, "--out", runs / "ft", *FT3)
    assert r.rc == 0 and "1 epoch(s) done" in r.out, r
    # the first epoch a trainer ends is checkpointed (it has no write time yet), then the end
    # of fine_tune
    assert saved == [(1, 0), (1, 1), (2, 0)]
    assert cli("train", tiny_data, "--out", runs / "straight", *FT3).rc == 0
    assert _rows(runs / "ft") == _rows(runs / "straight")
    a = load_file(str(runs / "ft" / "model.safetensors"))
    b = load_file(str(runs / "straight" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_stores_each_distinct_tensor_once(tiny_data, tmp_path, interrupt_after):
    """A checkpoint holds the current, best, start and best-tuned weights: the tensors they
    share (frozen groups, or a best epoch that is the latest) are written once, and load back
    equal."""
    partial = tmp_path / ".ft.partial"
    interrupt_after(2)
    with pytest.raises(KeyboardInterrupt):
        api.train(tiny_data, tmp_path / "ft", config=TrainConfig(
            backbone="tiny_cnn", input_size=32, strategy="fine_tune", unfreeze=1, epochs=3,
            patience=5), progress=False, log=lambda *a, **k: None)
    ckpt = torch.load(partial / "checkpoint.pt", weights_only=False)
    states = [ckpt["model"], ckpt["best"], ckpt["start"][0], ckpt["tuned"][0]]
    ptrs = {t.untyped_storage().data_ptr() for s in states for t in s.values()}
    distinct = {(k, t.numpy().tobytes()) for s in states for k, t in s.items()}
    assert len(ptrs) == len(distinct) < sum(len(s) for s in states)


def test_gradient_phases_use_the_fused_optimizer():
    p = torch.nn.Parameter(torch.zeros(3))
    assert loop.adamw([{"params": [p], "lr": 1e-3}]).defaults["fused"]


def test_restart_discards_interrupted_run(cli, tiny_data, tmp_path, interrupt_after):
    runs = tmp_path / "runs"
    interrupt_after(3)
    assert cli("train", tiny_data, "--out", runs / "ft", *FT3).rc == 130
    r = cli("train", tiny_data, "--out", runs / "ft", *FT3, "--lr", "0.01", "--restart")
    assert r.rc == 0, r
    assert "resuming" not in r.out
    assert leftovers(runs) == ["ft"]
    assert len(history_rows(runs / "ft")) == 4
    assert yaml.safe_load((runs / "ft" / "config.yaml").read_text())["lr"] == 0.01


def test_load_points_at_interrupted_run(cli, tiny_data, tmp_path, interrupt_after):
    interrupt_after(1)
    out = tmp_path / "runs" / "lp"
    assert cli("train", tiny_data, "--out", out, *FT3).rc == 130
    with pytest.raises(RunDirError, match=r"\.lp\.partial"):
        api.load(out)


# -- seeds --------------------------------------------------------------------------------------

def _scratch(data, out, seed):
    cfg = TrainConfig(backbone="tiny_cnn", strategy="scratch", input_size=32, epochs=2, seed=seed)
    result = api.train(data, out, config=cfg, progress=False, log=lambda *_: None)
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]
    return rows, result.metrics["val_accuracy"], result.model.state_dict()


def test_same_seed_same_run(tiny_data, tmp_path):
    h1, acc1, s1 = _scratch(tiny_data, tmp_path / "s1", 0)
    h2, acc2, s2 = _scratch(tiny_data, tmp_path / "s2", 0)
    assert len(h1) == 2
    assert h1 == h2 and acc1 == acc2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert _rows(tmp_path / "s1") == _rows(tmp_path / "s2")
    h3, _, s3 = _scratch(tiny_data, tmp_path / "s3", 1)
    assert h3 != h1 and not torch.equal(s3["backbone.stem.0.weight"], s1["backbone.stem.0.weight"])


def test_train_in_memory_without_out(tiny_data):
    from headstart.modalities import load_dataset
    ds = load_dataset(tiny_data)
    result = api.train(ds.sources, labels=ds.labels, progress=False, log=lambda *_: None,
                       config=TrainConfig(backbone="tiny_cnn", strategy="linear_probe",
                                          input_size=32))
    assert result.run_dir is None and result.classes == ["a", "b"]


def test_early_stopping_keeps_the_best_epoch(tiny_data, tmp_path):
    cfg = TrainConfig(backbone="tiny_cnn", strategy="fine_tune", input_size=32, epochs=3,
                      patience=1, lr=0.05)
    result = api.train(tiny_data, tmp_path / "es", config=cfg, progress=False,
                       log=lambda *_: None)
    rows = result.history
    head_acc = rows[0]["val_acc"]
    assert head_acc == 1.0  # separable data: nothing after the head can beat it
    assert [r["phase"] for r in rows] == ["head", "fine_tune"]
    assert result.metrics["stopped_early"] is True and result.metrics["epochs_run"] == 2
    assert result.metrics["val_accuracy"] == head_acc  # the best weights are the ones kept


def test_evaluate_skip_bad_lists_skipped(cli, tiny_runs, make_folder):
    data = make_folder(n=3)
    bad = data / "a" / "0.png"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    line = cli("evaluate", tiny_runs["linear_probe"], data, "--json").one_line_error()
    assert str(bad) in line and "--skip-bad" in line
    r = cli("evaluate", tiny_runs["linear_probe"], data, "--json", "--skip-bad")
    assert r.rc == 0, r
    report = r.json()
    assert report["n"] == 5 and len(report["skipped"]) == 1 and str(bad) in report["skipped"][0]
    r = cli("evaluate", tiny_runs["linear_probe"], data, "--skip-bad")
    assert r.rc == 0 and "skipped 1 bad input(s)" in r.out and str(bad) in r.out


def test_predict_corrupt_image(cli, tiny_runs, tmp_path):
    bad = tmp_path / "half.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 36, 3), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:300])
    line = cli("predict", "--run", tiny_runs["linear_probe"], bad).one_line_error()
    assert str(bad) in line


def test_auto_image_size_is_measured_and_stored(cli, make_folder, tmp_path):
    out = tmp_path / "auto"
    r = cli("train", make_folder(n=6), "--out", out, "--backbone", "tiny_cnn", "--strategy",
            "linear_probe", "--quiet")
    assert r.rc == 0, r
    config = yaml.safe_load((out / "config.yaml").read_text())
    rows = config["image_size_measurements"]
    assert sorted({m["image_size"] for m in rows}) == [16, 24, 32]
    # every size is measured at the whole network and at its earlier cut, in one pass each
    assert {m["backbone"] for m in rows} == {"tiny_cnn", "tiny_cnn@block1"}
    assert config["input_size"] in {m["image_size"] for m in rows}
    assert f"input: {config['backbone']} at {config['input_size']}px" in r.out
    assert api.load(out).preprocess.size == config["input_size"]


def test_cut_none_measures_only_the_whole_network(cli, make_folder, tmp_path):
    out = tmp_path / "whole"
    r = cli("train", make_folder(n=6), "--out", out, "--backbone", "tiny_cnn", "--strategy",
            "linear_probe", "--cut", "none", "--quiet")
    assert r.rc == 0, r
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert {m["backbone"] for m in config["image_size_measurements"]} == {"tiny_cnn"}
    assert config["backbone"] == "tiny_cnn"


def test_probe_head_is_refit_on_train_and_val_with_honest_val_figures(tiny_data):
    cfg = TrainConfig(backbone="tiny_cnn", strategy="linear_probe", input_size=32)
    r = api.train(tiny_data, config=cfg, progress=False, log=lambda *_: None)
    m = r.metrics
    assert m["head_refit_on"] == m["train_examples"] + m["val_examples"] == 16
    assert r.history[0]["refit_on"] == 16
    # the reported validation accuracy is the one of the head fitted before the refit
    assert r.metrics["val_accuracy"] == pytest.approx(r.history[0]["val_acc"])


def test_equal_accuracy_at_lower_loss_counts_as_better():
    from headstart.data.transforms import Preprocess
    from headstart.heads import LinearHead, TransferModel
    from headstart.strategies import build_plan

    backbone = create_backbone("tiny_cnn")
    model = TransferModel(backbone, LinearHead(32, 2))
    plan = build_plan("fine_tune", backbone.config.layer_groups, epochs=5)
    trainer = loop.Trainer(model, plan, pre=Preprocess(32, (0.5,) * 3, (0.5,) * 3),
                           cfg=TrainConfig(patience=5), progress=False, log=lambda *_: None)
    for epoch, loss, since in ((1, 1.0, 0), (2, 0.5, 0), (3, 0.7, 1)):
        with torch.no_grad():
            model.head.fc.bias.fill_(epoch)
        trainer._end_epoch(1, epoch, {"val_acc": 0.5, "val_loss": loss}, 0.0, optimizer=None)
        assert trainer.since_best == since
    assert float(trainer.best_state["head.fc.bias"][0]) == 2.0  # epoch 2: same acc, lower loss
