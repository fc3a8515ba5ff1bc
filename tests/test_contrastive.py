"""The contrastive (SetFit-style) strategy: its pair loss, its batch order, its plan, and runs on
the tiny text and image backbones through the API and the CLI."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import write_csv
from headstart import api
from headstart.backbones import create_backbone, get_config
from headstart.strategies import apply_phase, build_plan, param_groups
from headstart.training import TrainConfig, build_model
from headstart.training.pairs import pair_loss, pair_order

QUIET = dict(progress=False, log=lambda *_: None)


def test_pair_loss_is_the_balanced_mean_over_every_pair():
    torch.manual_seed(0)
    emb = torch.randn(6, 5)
    t = torch.tensor([0, 0, 1, 1, 1, 2])
    e = emb / emb.norm(dim=1, keepdim=True)
    pos, neg = [], []
    for i, j in itertools.permutations(range(6), 2):  # written out pair by pair
        cos = float(e[i] @ e[j])
        (pos if t[i] == t[j] else neg).append((cos - (1.0 if t[i] == t[j] else 0.0)) ** 2)
    expected = 0.5 * np.mean(pos) + 0.5 * np.mean(neg)
    assert float(pair_loss(emb, t)) == pytest.approx(expected, rel=1e-5)
    assert float(pair_loss(emb, torch.zeros(6, dtype=torch.long))) == pytest.approx(
        np.mean([(float(e[i] @ e[j]) - 1) ** 2 for i, j in itertools.permutations(range(6), 2)]),
        rel=1e-5)  # one class: only positives
    assert float(pair_loss(emb[:1], t[:1])) == 0.0


def test_pair_loss_pulls_a_class_together_and_pushes_classes_apart():
    torch.manual_seed(1)
    emb = torch.randn(8, 4, requires_grad=True)
    t = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    before = float(pair_loss(emb.detach(), t))
    opt = torch.optim.SGD([emb], lr=2.0)
    for _ in range(500):
        opt.zero_grad()
        pair_loss(emb, t).backward()
        opt.step()
    e = torch.nn.functional.normalize(emb.detach(), dim=1)
    sim = e @ e.T
    assert float(pair_loss(emb.detach(), t)) < 0.01 * before
    assert sim[:4, :4].min() > 0.9 and sim[4:, 4:].min() > 0.9
    assert sim[:4, 4:].abs().max() < 0.1


def test_pair_order_keeps_every_index_once_and_gives_batches_positive_pairs():
    y = np.repeat(np.arange(20), 5)  # 20 classes: random batches of 16 would rarely hold pairs
    idx = list(range(0, 100, 1))
    order = pair_order(idx, y, seed=3)
    assert sorted(order) == idx
    for s in range(0, 96, 16):
        batch = y[order[s:s + 16]]
        assert len(set(batch)) < len(batch), "every batch holds a same-class pair"
    assert pair_order(idx, y, seed=3) == order and pair_order(idx, y, seed=4) != order
    sub = [3, 7, 11, 50, 51]  # a process's shard: only its own indices
    assert sorted(pair_order(sub, y, seed=0)) == sub


def test_plan_is_pairs_then_a_head_on_fresh_features():
    groups = get_config("tiny_text").layer_groups
    plan = build_plan("contrastive", groups, epochs=4, modality="text")
    pairs, head = plan.phases
    assert plan.pretrained and pairs.objective == "pairs" and pairs.epochs == 4
    assert pairs.train_groups == groups and not pairs.cached
    assert head.cached and head.fresh and head.train_groups == ()
    assert max(pairs.group_lrs) == pytest.approx(2e-5)  # SetFit's body rate for transformers
    top2 = build_plan("contrastive", groups, unfreeze="2", modality="text").phases[0]
    assert top2.train_groups == groups[-2:]


def test_pair_phase_trains_the_backbone_not_the_head():
    cfg = TrainConfig(backbone="tiny_text", input_size=64)
    model = build_model(cfg, 3, pretrained=True)
    phase = build_plan("contrastive", model.backbone.config.layer_groups, modality="text").phases[0]
    apply_phase(model, phase)
    assert not any(p.requires_grad for p in model.head.parameters())
    table = model.backbone.token_table()  # the token-embedding table stays as pre-trained
    assert table is not None and not table.requires_grad
    assert all(p.requires_grad for p in model.backbone.parameters() if p is not table)
    names = {g["name"].split(":")[0] for g in param_groups(model, phase)}
    assert not any(p is table for g in param_groups(model, phase) for p in g["params"])
    assert names == {"embeddings", "layer1", "layer2"}  # no head


def test_contrastive_on_texts_tunes_the_body_then_refits_the_head(articles):
    texts, labels = articles
    init = create_backbone("tiny_text").state_dict()
    trained = api.train(texts, labels=labels, config=TrainConfig(
        backbone="tiny_text", strategy="contrastive", epochs=2, lr=1e-3, val_fraction=0.2), **QUIET)
    phases = [r["phase"] for r in trained.history]
    assert phases == ["contrastive", "contrastive", "head"]
    assert all("pair_loss" in r and "val_acc" in r for r in trained.history[:2])
    state = trained.model.backbone.state_dict()
    assert any(not torch.equal(state[k], init[k]) for k in init), "the body moved"
    # the saved head was refitted on training + validation; the reported validation figure
    # is the one from the head fitted on training alone
    assert trained.metrics["head_refit_on"] == len(texts)
    assert trained.metrics["val_accuracy"] == pytest.approx(trained.history[-1]["val_acc"])
    assert trained.metrics["forgetting"]["drift"]["layer2"] > 0
    report, _ = api.evaluate(trained, texts[:5], labels=labels[:5], progress=False)
    assert report["n"] == 5


def test_contrastive_head_matches_the_saved_body(articles, tmp_path):
    """The final head is fitted on the kept body's embeddings: a reloaded run predicts the
    training texts it was refitted on as the in-memory model does."""
    texts, labels = articles
    trained = api.train(texts, labels=labels, out=tmp_path / "run", config=TrainConfig(
        backbone="tiny_text", strategy="contrastive", epochs=2, lr=1e-3), **QUIET)
    again = api.load(tmp_path / "run")
    a = api.predict_probs(trained, texts[:8])
    b = api.predict_probs(again, texts[:8])
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (tmp_path / "run" / "history.png").is_file()


def test_contrastive_on_images(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(24)]
    for i in range(12):  # class b: brighter
        images[i] = np.clip(images[i].astype(int) + 80, 0, 255).astype(np.uint8)
    labels = ["b"] * 12 + ["d"] * 12
    init = create_backbone("tiny_cnn").state_dict()
    trained = api.train(images, labels=labels, config=TrainConfig(
        backbone="tiny_cnn", strategy="contrastive", epochs=2, input_size=16, batch_size=8),
        **QUIET)
    state = trained.model.backbone.state_dict()
    assert any(not torch.equal(state[k], init[k]) for k in init if "running" not in k)
    assert [r["phase"] for r in trained.history] == ["contrastive", "contrastive", "head"]


def test_cli_offers_contrastive(tmp_path, cli, articles):
    texts, labels = articles
    data = write_csv(tmp_path / "t.csv", texts, labels)
    r = cli("train", data, "--out", tmp_path / "run", "--backbone", "tiny_text", "--strategy",
            "contrastive", "--epochs", "1", "--quiet")
    assert r.rc == 0, r.err
    assert "contrastive" in (tmp_path / "run" / "config.yaml").read_text()
    r = cli("predict", "--run", tmp_path / "run", "Shares rose as profits beat forecasts")
    assert r.rc == 0, r.err


def test_an_image_met_again_in_a_later_pass_gets_a_fresh_crop(tmp_path):
    from PIL import Image

    from headstart.data.datasets import ImageDataset
    from headstart.modalities.image import EpochImages
    from headstart.training.batches import Split
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(paths[-1])
    split = Split(ImageDataset([str(p) for p in paths], ["a", "b"]), np.array([0, 1]))
    draw = lambda img, rng: np.array([rng.random()], np.float32)  # noqa: E731
    data = EpochImages(split, draw, seed=0, epoch=0, order=[0, 1, 0, 1], per_pass=2)
    first, again = float(data[0][0]), float(data[2][0])
    assert first != again and data[2][1] == data[0][1] == 0
    same = EpochImages(split, draw, seed=0, epoch=0, order=[0, 1, 0, 1], per_pass=2)
    assert float(same[2][0]) == again  # seeded: a resumed epoch sees the same crops


def test_epoch_shape_passes_small_sets_several_times():
    from headstart.training.batches import epoch_shape
    assert epoch_shape("pairs", 30, 32, drop_last=False) == (16, 8, 15)  # 8 labelled per class
    assert epoch_shape("pairs", 1000, 32, drop_last=False) == (16, 1, 63)  # a pass is long enough
    assert epoch_shape("pairs", 100, 8, drop_last=True) == (8, 2, 25)  # smaller batches are kept
    assert epoch_shape("classify", 30, 32, drop_last=False) == (32, 1, 1)  # other phases: one pass
    assert epoch_shape("classify", 100, 32, drop_last=True) == (32, 1, 3)  # images drop the last


def test_an_early_stop_still_fits_and_refits_the_final_head(articles, monkeypatch):
    from headstart.training import loop
    original = loop.Trainer._fit_head

    def worse_after_the_first_epoch(self, *a, **kw):  # validation says: stop after epoch 2
        scores, logits = original(self, *a, **kw)
        if any(r["phase"] == "contrastive" for r in self.history) and "val_acc" in scores:
            scores = {**scores, "val_acc": 0.0}
        return scores, logits
    monkeypatch.setattr(loop.Trainer, "_fit_head", worse_after_the_first_epoch)
    texts, labels = articles
    trained = api.train(texts, labels=labels, config=TrainConfig(
        backbone="tiny_text", strategy="contrastive", epochs=6, patience=1), **QUIET)
    phases = [r["phase"] for r in trained.history]
    assert trained.metrics["stopped_early"] and phases.count("contrastive") < 6
    assert phases[-1] == "head" and trained.history[-1]["refit_on"] == len(texts)
    assert trained.metrics["head_refit_on"] == len(texts)


def test_pair_plans_fit_their_heads_on_the_embeddings_as_they_are():
    """A plan with a pair-objective phase fits its heads on raw embeddings (scikit-learn's
    LogisticRegression(C), SetFit's head); other plans standardise."""
    from sklearn.linear_model import LogisticRegression

    from headstart.training.headfit import fit_standardized_head
    from headstart.training.loop import Trainer
    from headstart.training.model import preprocess_for
    rng = np.random.default_rng(0)
    f = rng.standard_normal((60, 1, 8)).astype(np.float32) * 0.1 + 0.3
    y = rng.integers(0, 3, 60)
    f[np.arange(60), 0, y] += 0.2
    W, b, mean, std = fit_standardized_head(f, y, 3, C=1.0, standardize=False)
    assert torch.equal(mean, torch.zeros(8)) and torch.equal(std, torch.ones(8))
    ref = LogisticRegression(C=1.0, tol=1e-8, max_iter=5000).fit(f[:, 0], y)
    assert np.allclose(W.numpy(), ref.coef_, atol=2e-3)
    assert np.allclose(b.numpy(), ref.intercept_, atol=2e-3)

    cfg = TrainConfig(backbone="tiny_cnn", input_size=32)
    groups = get_config("tiny_cnn").layer_groups
    for strategy, standardize in (("contrastive", False), ("linear_probe", True),
                                  ("fine_tune", True)):
        plan = build_plan(strategy, groups)
        model = build_model(replace(cfg, strategy=strategy), 2, pretrained=True)
        trainer = Trainer(model, plan, pre=preprocess_for(cfg), cfg=cfg, progress=False)
        assert trainer.standardize is standardize, strategy


def test_pair_steps_run_without_attention_dropout_and_restore_it(articles, monkeypatch):
    """Pair steps drop no attention probabilities (hidden-state dropout stays), which spares
    CPUs materialising every attention matrix; the encoder's own rate is back after."""
    from headstart.training import loop
    b = create_backbone("tiny_text")
    attn = [m.dropout for m in b.encoder.modules() if "SelfAttention" in type(m).__name__]
    others = [m for m in b.encoder.modules() if isinstance(m, torch.nn.Dropout)
              and not any(m is d for d in attn)]
    assert attn and others and {d.p for d in attn} == {0.1}
    with b.attention_dropout(0.0):
        assert {d.p for d in attn} == {0.0} and {d.p for d in others} == {0.1}
    assert {d.p for d in attn} == {0.1}

    seen = []
    original = loop.Trainer._train_epoch

    def spy(self, *a, **kw):
        seen.append({m.dropout.p for m in self.model.backbone.encoder.modules()
                     if "SelfAttention" in type(m).__name__})
        return original(self, *a, **kw)
    monkeypatch.setattr(loop.Trainer, "_train_epoch", spy)
    texts, labels = articles
    result = api.train(texts, labels=labels, progress=False, log=lambda *_: None,
                       config=TrainConfig(backbone="tiny_text", strategy="contrastive", epochs=2))
    assert seen == [{0.0}, {0.0}]
    assert {m.dropout.p for m in result.model.backbone.encoder.modules()
            if "SelfAttention" in type(m).__name__} == {0.1}


def test_the_pair_plans_mix_of_0_is_the_probe(articles, monkeypatch):
    """Under `auto` on texts (pairs, then the mix) the mix of 0 is judged by the probe's own
    head, standardised on the frozen features (the plan's first head, as `linear_probe` fits
    it), and where the mix keeps 0 the saved model is exactly the linear probe's."""
    from headstart.training import loop, mixing
    texts, labels = articles
    cfg = TrainConfig(backbone="tiny_text", epochs=1, lr=1e-3, val_fraction=0.3)
    auto = api.train(texts, labels=labels, config=cfg, **QUIET)
    assert auto.metrics["strategy"] == "auto"
    head, zero = auto.history[0], auto.metrics["mix"]["mixes"][0]
    assert head["phase"] == "head" and zero["alpha"] == 0
    assert zero["val_acc"] == pytest.approx(head["val_acc"], abs=1e-4)
    assert zero["val_loss"] == pytest.approx(head["val_loss"], abs=1e-4)

    # a mix that can only keep 0: the run hands back the probe, body and head
    monkeypatch.setattr(loop, "choose_mix",
                        lambda *a, **kw: mixing.choose_mix(*a, **{**kw, "alphas": (0.0,)}))
    kept = api.train(texts, labels=labels, config=cfg, **QUIET)
    probe = api.train(texts, labels=labels, config=replace(cfg, strategy="linear_probe"),
                      **QUIET)
    assert kept.metrics["mix"]["alpha"] == 0
    a, b = kept.model.state_dict(), probe.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), \
        [k for k in a if not torch.equal(a[k], b[k])]
    np.testing.assert_allclose(api.predict_probs(kept, texts[:8]),
                               api.predict_probs(probe, texts[:8]), atol=1e-6)


def test_a_cut_text_encoder_is_pair_trained_as_its_whole_network():
    """A layer cut of a text encoder hands pair training its network's token table (left as
    pre-trained) and its attention dropout (off during pair steps); an image network has no
    token table."""
    from headstart.backbones.cut import CutBackbone
    cut = CutBackbone(create_backbone("tiny_text"), ("layer1",), keep_output=True)
    assert cut.token_table() is cut.base.token_table() is not None
    attn = [m.dropout for m in cut.base.encoder.modules()
            if "SelfAttention" in type(m).__name__]
    assert attn and {d.p for d in attn} == {0.1}
    with cut.attention_dropout(0.0):
        assert {d.p for d in attn} == {0.0}
    assert {d.p for d in attn} == {0.1}
    assert create_backbone("tiny_cnn").token_table() is None


def test_pair_features_judge_at_the_training_precision_and_the_head_learns_from_fp32(
        articles, monkeypatch):
    """Under the pair objective an epoch's validation and each mix are judged on features
    computed at the training's autocast precision (bf16 here), the mix of 1 on the best epoch's
    own (not computed again), and the saved head is fitted on fp32 features of the kept
    encoder, the ones prediction computes."""
    from headstart.modalities.text import embed_texts
    from headstart.training import closedform
    calls = []
    original = closedform.ClosedFormHeads._embed

    def spy(self, split, **kw):
        out = original(self, split, **kw)
        calls.append((kw.get("judge", False), list(split.ds.sources), out, self.pre))
        return out
    monkeypatch.setattr(closedform.ClosedFormHeads, "_embed", spy)
    seen_autocast = []
    extract = closedform.extract_features

    def watched(*a, **kw):
        seen_autocast.append(torch.is_autocast_enabled("cpu"))
        return extract(*a, **kw)
    monkeypatch.setattr(closedform, "extract_features", watched)
    texts, labels = articles
    cfg = TrainConfig(backbone="tiny_text", epochs=2, lr=1e-3, val_fraction=0.3,
                      precision="bf16")
    result = api.train(texts, labels=labels, config=cfg, **QUIET)
    mix = result.metrics["mix"]
    assert [r["alpha"] for r in mix["mixes"]] == [0, 0.25, 0.5, 0.75, 1]
    assert mix["alpha"] != 0  # pair plans prefer the tuned end: the final head is the tuned one
    judged = [c for c in calls if c[0]]
    final = [c for c in calls if not c[0]]
    # two splits per epoch and per interior mix; 0 is the probe's cache, 1 the best epoch's
    assert len(judged) == 2 * 2 + 2 * 3, [(c[0], len(c[1])) for c in calls]
    assert seen_autocast == [c[0] for c in calls]
    assert len(final) == 2 and [len(c[1]) for c in final] == [
        result.metrics["train_examples"], result.metrics["val_examples"]]
    for _, sources, feats, pre in final:  # exactly the saved encoder's fp32 features
        np.testing.assert_array_equal(feats[:, 0], embed_texts(result.model.backbone, pre, sources))
