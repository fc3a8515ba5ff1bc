"""Strategies are plans; apply_phase freezes by layer group; the one BatchNorm policy."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from headstart import ConfigError, TrainConfig
from headstart.training import build_model
from headstart.backbones import get_config
from headstart.modalities.image import LR_SPREAD as LR_MULT
from headstart.strategies import apply_phase, build_plan, param_groups

GROUPS = get_config("tiny_cnn").layer_groups  # ("stem", "block1", "block2")
LITE = get_config("efficientnet_lite0").layer_groups


def test_tiny_groups_are_early_to_late():
    assert GROUPS == ("stem", "block1", "block2")
    assert LITE[0] == "stem" and LITE[-1] == "top" and len(LITE) == 9


def test_linear_probe_is_one_cached_phase():
    plan = build_plan("linear_probe", GROUPS, epochs=7)
    assert plan.pretrained
    assert len(plan.phases) == 1
    (p,) = plan.phases
    assert p.cached and p.train_groups == () and p.group_lrs == ()


def test_fine_tune_is_head_then_all_groups():
    plan = build_plan("fine_tune", GROUPS, epochs=3, lr=1e-3)
    assert plan.pretrained
    head, ft = plan.phases
    assert head.cached and head.train_groups == ()
    assert not ft.cached and ft.train_groups == GROUPS and ft.epochs == 3
    assert ft.head_lr == pytest.approx(1e-3)


@pytest.mark.parametrize("groups", [GROUPS, LITE], ids=["tiny_cnn", "efficientnet_lite0"])
def test_discriminative_rates_rise_from_early_to_late(groups):
    ft = build_plan("fine_tune", groups, epochs=2, lr=1e-3).phases[1]
    lrs = ft.group_lrs
    assert len(lrs) == len(groups)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 / LR_MULT)


def test_default_image_rates_are_adam_sized():
    """Adam moves each weight by about the rate per step: pre-trained CNN weights get 1e-4 at
    the top, 10x less at the stem (1e-3 wrecked the probe's features)."""
    lrs = build_plan("fine_tune", LITE).phases[1].group_lrs
    assert lrs[-1] == pytest.approx(1e-4) and lrs[0] == pytest.approx(1e-5)


def test_auto_tunes_the_top_of_images_and_texts_on_pairs_both_after_a_probe():
    image = build_plan("auto", LITE)
    assert image.mix and image.strategy == "auto"
    assert [p.name for p in image.phases] == ["head", "top_tune"] and image.phases[0].cached
    assert image.phases[1].train_groups == LITE[-2:] and image.phases[1].frozen_maps
    assert image.phases[1].group_lrs == build_plan("fine_tune", LITE).phases[1].group_lrs[-2:]
    text = build_plan("auto", ("embeddings", "layer1", "layer2", "pooling"), modality="text")
    assert text.mix
    assert [(p.name, p.objective, p.cached, p.fresh) for p in text.phases] == [
        ("head", "classify", True, False), ("contrastive", "pairs", False, False),
        ("head", "classify", True, True)]


def test_epochs_default_to_the_strategys_for_the_modality_and_a_given_number_stands():
    texts = ("embeddings", "layer1", "pooling")
    assert build_plan("auto", LITE).phases[1].epochs == 5  # top_tune
    assert build_plan("fine_tune", texts, modality="text").phases[1].epochs == 5
    assert build_plan("auto", texts, modality="text").phases[1].epochs == 3  # pair training
    assert build_plan("contrastive", texts, modality="text").phases[0].epochs == 3
    assert build_plan("contrastive", LITE).phases[0].epochs == 5  # measured on texts only
    assert build_plan("auto", texts, modality="text", epochs=5).phases[1].epochs == 5
    assert TrainConfig().epochs is None and TrainConfig(epochs=4).validate().epochs == 4


def test_gradual_unfreezes_one_more_group_per_phase():
    plan = build_plan("gradual", GROUPS, epochs=5, lr=1e-3)
    head, *steps = plan.phases
    assert head.cached
    assert len(steps) == len(GROUPS)
    assert [s.train_groups for s in steps] == [GROUPS[-1:], GROUPS[-2:], GROUPS]
    assert sum(s.epochs for s in steps) == 5  # the gradient budget is the one asked for
    assert steps[-1].epochs == 3
    for s in steps:  # each group keeps its own rate wherever it appears
        assert s.group_lrs == build_plan("fine_tune", GROUPS, lr=1e-3).phases[1].group_lrs[
            -len(s.train_groups):]


def test_gradual_with_fewer_epochs_than_groups():
    plan = build_plan("gradual", LITE, epochs=2)
    assert [p.train_groups for p in plan.phases[1:]] == [LITE[-1:], LITE[-2:]]
    assert plan.epochs == 3  # head + 2


def test_scratch_is_everything_from_random_init():
    plan = build_plan("scratch", GROUPS, epochs=4)
    assert plan.pretrained is False
    (p,) = plan.phases
    assert not p.cached and p.train_groups == GROUPS and p.epochs == 4


def test_unfreeze_top_groups():
    assert build_plan("fine_tune", GROUPS, unfreeze=1).phases[1].train_groups == ("block2",)
    assert build_plan("fine_tune", GROUPS, unfreeze="2").phases[1].train_groups == \
        ("block1", "block2")
    assert build_plan("fine_tune", GROUPS, unfreeze="all").phases[1].train_groups == GROUPS


@pytest.mark.parametrize("kw", [dict(unfreeze=0), dict(unfreeze=4), dict(unfreeze="top"),
                                dict(epochs=0), dict(lr=0.0), dict(lr=-1e-3)])
def test_bad_plans(kw):
    with pytest.raises(ConfigError):
        build_plan("fine_tune", GROUPS, **kw)


def test_unknown_strategy():
    with pytest.raises(ConfigError, match="linear_probe, fine_tune, top_tune, gradual, scratch"):
        build_plan("finetune", GROUPS)


# -- apply_phase and BatchNorm ----------------------------------------------------------------

def tiny_model(*, keep_bn_stats: bool = False):
    torch.manual_seed(0)
    model = build_model(TrainConfig(backbone="tiny_cnn", input_size=32), 3, pretrained=True)
    model.keep_bn_stats = keep_bn_stats
    return model


def bns(model, group):
    return [m for mod in model.backbone.group_modules()[group] for m in mod.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def step(model, phase, n_steps=2):
    opt = torch.optim.AdamW(param_groups(model, phase))
    g = torch.Generator().manual_seed(1)
    for _ in range(n_steps):
        x = torch.randn(8, 3, 32, 32, generator=g) * 2 + 1  # statistics unlike the init
        loss = nn.functional.cross_entropy(model(x), torch.arange(8) % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()


def changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return {k for k in keys if not torch.equal(before[k], after[k])}


def test_unfreeze_one_trains_only_the_top_group():
    model = tiny_model()
    apply_phase(model, build_plan("fine_tune", GROUPS, unfreeze=1).phases[1])
    gp = model.backbone.group_parameters()
    assert all(p.requires_grad for p in gp["block2"])
    assert not any(p.requires_grad for g in ("stem", "block1") for p in gp[g])
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.frozen == ("stem", "block1")


def test_head_phase_freezes_whole_backbone():
    model = tiny_model()
    apply_phase(model, build_plan("fine_tune", GROUPS).phases[0])
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_param_groups_carry_the_phase_rates():
    model = tiny_model()
    phase = build_plan("fine_tune", GROUPS, lr=1e-3).phases[1]
    groups = param_groups(model, phase)
    names = ["stem", "block1", "block2", "head"]
    # each layer group's weights, then its 1-d parameters (no weight decay)
    assert [g["name"] for g in groups] == [n for name in names
                                          for n in (name, f"{name}:no_decay")]
    lrs = [*phase.group_lrs, phase.head_lr]
    assert [g["lr"] for g in groups] == [lr for lr in lrs for _ in (0, 1)]
    gp = model.backbone.group_parameters()
    for name in names[:-1]:  # matched by identity, not name
        mine = [p for g in groups if g["name"].split(":")[0] == name for p in g["params"]]
        assert {id(p) for p in mine} == {id(p) for p in gp[name]}
    for g in groups:
        one_d = {p.ndim <= 1 for p in g["params"]}
        assert one_d == {g["name"].endswith(":no_decay")}
        assert (g["weight_decay"] == 0) == g["name"].endswith(":no_decay")


def test_frozen_batchnorm_keeps_statistics():
    model = tiny_model()
    phase = build_plan("fine_tune", GROUPS, unfreeze=1).phases[1]
    apply_phase(model, phase)
    model.train()
    assert model.training and model.head.training
    assert all(not bn.training for g in ("stem", "block1") for bn in bns(model, g))
    assert all(bn.training for bn in bns(model, "block2"))
    before = snapshot(model)
    step(model, phase)
    after = snapshot(model)
    assert changed(before, after, "backbone.stem") == set()
    assert changed(before, after, "backbone.block1") == set()
    top = changed(before, after, "backbone.block2")
    assert {"backbone.block2.0.weight", "backbone.block2.1.weight",
            "backbone.block2.1.running_mean", "backbone.block2.1.running_var"} <= top
    assert changed(before, after, "head.") == {"head.fc.weight", "head.fc.bias"}


def test_policy_survives_eval_then_train():
    model = tiny_model()
    apply_phase(model, build_plan("fine_tune", GROUPS, unfreeze=1).phases[1])
    model.eval()
    model.train()
    assert all(not bn.training for bn in bns(model, "stem"))
    assert all(bn.training for bn in bns(model, "block2"))


def test_keep_bn_stats_keeps_every_running_statistic():
    model = tiny_model(keep_bn_stats=True)
    phase = build_plan("fine_tune", GROUPS).phases[1]  # every group trains
    apply_phase(model, phase)
    model.train()
    assert all(not bn.training for g in GROUPS for bn in bns(model, g))
    before = snapshot(model)
    step(model, phase)
    after = snapshot(model)
    stats = {k for k in before if "running_" in k or "num_batches" in k}
    assert stats and not any(k in changed(before, after, "backbone.") for k in stats)
    # the affine and conv weights still learn
    assert {"backbone.stem.0.weight", "backbone.block2.1.weight"} <= \
        changed(before, after, "backbone.")


def test_scratch_updates_statistics():
    model = tiny_model()
    phase = build_plan("scratch", GROUPS).phases[0]
    apply_phase(model, phase)
    model.train()
    before = snapshot(model)
    step(model, phase)
    assert "backbone.stem.1.running_mean" in changed(before, snapshot(model), "backbone.")
