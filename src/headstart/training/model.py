"""The model a run trains: which backbone (the modality's default, checked against the data),
its input pipeline, the backbone + head built from a config, and a trained model as the rest
of headstart passes it around."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import modalities
from ..backbones import create_backbone, get_config
from ..backbones.source import check_fits
from ..exceptions import ConfigError
from ..heads import LinearHead, TransferModel
from .config import PATIENCE, TrainConfig

# gradient epochs of fine-tuning a source model you pre-trained (tune_source). Measured on dev
# splits (benchmarks/pretrain_split.py --dev; a small_cnn source of five animal-mnist classes,
# targets the five others and scikit-learn's digits, 10 and 50 per class, 3 seeds): over the
# probe, 10 epochs gained +0.3 and +2.8 points on digits where 20 gained +3.2 and +4.5; 40
# epochs +2.5 and +5.3, alike, in twice the time
SOURCE_EPOCHS = 20


@dataclass
class TrainedModel:
    model: TransferModel
    classes: list[str]
    config: TrainConfig  # resolved: input_size is a number
    metrics: dict
    history: list[dict]
    run_dir: Path | None = None
    label_values: list | None = None  # the user's labels (e.g. ints), in the order of classes
    stored: dict = field(default_factory=dict)  # the run's config.yaml, when loaded from one
    # content hashes of the examples it learned from (training and validation), sorted: what
    # `evaluate` checks test data against (data/duplicates.py); None for older runs
    trained_on: list[str] | None = None

    @property
    def preprocess(self):
        return preprocess_for(self.config)

    @property
    def modality(self) -> modalities.Modality:
        return modalities.of(get_config(self.config.backbone))


def preprocess_for(cfg: TrainConfig):
    """The backbone's input pipeline: image pre-processing, or the tokenizer and its windows."""
    b = get_config(cfg.backbone)
    return modalities.of(b).preprocess(b, int(cfg.input_size), truncate=cfg.truncate)


def resolve_backbone(cfg: TrainConfig, modality):
    """Fill in the default backbone for the data's modality and check that they agree; where
    the modality has no choice of input size (texts: the encoder's window), set it, and turn
    off what the modality does not do (flips, augmentation)."""
    m = modalities.get(modality)
    cfg.backbone = cfg.backbone or m.default_backbone
    bcfg = get_config(cfg.backbone)
    check_fits(bcfg, input_size=cfg.input_size, modality=m)
    if bcfg.source_labels.startswith("run:"):  # your own source model: its own input size
        cfg.input_size = bcfg.input_size
    if bcfg.modality != m.name:
        raise ConfigError(f"backbone '{cfg.backbone}' reads {modalities.get(bcfg.modality).plural}"
                          f" but the data holds {m.plural}; pick {m.article} {m.name} backbone "
                          f"such as '{m.default_backbone}' (see `headstart models`)")
    if not m.sizes_input:
        cfg.input_size = bcfg.input_size
    cfg.flip, cfg.augment = cfg.flip and m.flips, cfg.augment and m.augments
    return bcfg


def tune_source(cfg: TrainConfig, bcfg, log) -> None:
    """Fill in early stopping's patience, and the defaults for fine-tuning a source model you
    pre-trained (`bcfg.trained_lr`: trained from scratch by `headstart pretrain`): the top rate
    it was trained at, SOURCE_EPOCHS epochs, and its whole schedule (no early stop: validation
    keeps the best epoch, and the mix decides how much of it to keep). At the rates that suit
    a large shipped network (a thirtieth of the scratch rate) fine-tuning barely moved such a
    source (relative drift 0.01) and kept its probe; at its own rate validation dips in the
    first epochs, while the rate is high, and early stopping ended every run there, before
    the gains of the schedule's later epochs (benchmarks/README.md). What the user set stays."""
    m = modalities.get(bcfg.modality)
    strategy = m.auto_strategy if cfg.strategy == "auto" else cfg.strategy
    # a source's rate is that of classifying; pair training (contrastive) has its own
    own = bcfg.trained_lr is not None and strategy not in ("scratch", "linear_probe",
                                                            "contrastive")
    if own:
        filled = []
        if cfg.lr is None:
            cfg.lr = bcfg.trained_lr
            filled.append(f"lr {cfg.lr:g}")
        if cfg.epochs is None:
            cfg.epochs = SOURCE_EPOCHS
            filled.append(f"epochs {cfg.epochs}")
        if cfg.patience is None:
            cfg.patience = cfg.epochs
            filled.append("no early stop")
        if filled:
            log(f"your source model, fine-tuned as it was trained: {', '.join(filled)} (its "
                "whole schedule; validation keeps the best epoch and the mix; --lr, --epochs "
                "and --patience change them)")
    if cfg.patience is None:
        cfg.patience = PATIENCE


def build_model(cfg: TrainConfig, num_classes: int, *, pretrained: bool) -> TransferModel:
    """The backbone named by cfg (its weights, input size and pooled layers) with a new head."""
    backbone = create_backbone(cfg.backbone, pretrained=pretrained, input_size=int(cfg.input_size),
                               weights=cfg.weights if pretrained else None)
    backbone.set_feature_layers(1 if cfg.layers == "auto" else int(cfg.layers))
    return TransferModel(backbone, LinearHead(backbone.feature_dim, num_classes))


def seeded_model(cfg: TrainConfig, num_classes: int, plan) -> TransferModel:
    """The model a run starts from (and `--refit full` starts again from): the same seed for
    the head's random init (and everything's, for scratch), the BatchNorm policy applied."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, num_classes, pretrained=plan.pretrained)
    model.keep_bn_stats = cfg.bn_stats == "keep" or (cfg.bn_stats == "auto" and plan.pretrained)
    return model
