"""The resolved settings of a training run, stored as config.yaml in the run directory. Each
field declares its schema entry (options.py): type, default, constraint, help, flags."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.texts import TextOptions
from ..strategies import EPOCHS, strategy_names
from .options import (COMPARE, PRETRAIN, TRAIN, AsText, AutoOr, Matches, Number, OneOf,
                      Optional, option, options)

REFIT_MODES = ("head", "full", "none")
INF = float("inf")
PATIENCE = 3  # early stopping's default patience, in epochs
_MODEL = {TRAIN, COMPARE}  # what `pretrain` fixes itself (the architecture, from scratch)
_STRATEGIES = strategy_names()


@dataclass
class TrainConfig:
    backbone: str | None = option(
        None, "a zoo name (see `headstart models`), a source model directory from `headstart "
        "pretrain`, a Hugging Face / sentence-transformers directory, or auto (ranked on your "
        "data by `headstart rank`; also sets --strategy and --unfreeze); default: "
        "efficientnet_lite0 for images, minilm_l6 for texts", commands=_MODEL,
        help_for={COMPARE: "a zoo name (see `headstart models`; default efficientnet_lite0 for "
                  "images, minilm_l6 for texts) or a source model directory from `headstart "
                  "pretrain`"})
    strategy: str = option(
        "auto", "auto (default): adapt as measured best for the data, guarded by the probe; "
        "linear_probe: frozen backbone + logistic head; fine_tune: head, then the top groups "
        "with discriminative rates; top_tune: head, then the top 2 groups on the frozen "
        "groups' output computed once (fast; auto on images); gradual: one more group per "
        "epoch; scratch: same network, "
        "random init; contrastive: few-shot, the backbone learns from pairs of examples "
        "(SetFit-style), then a logistic head", commands=_MODEL,
        rule=OneOf(_STRATEGIES, message="unknown strategy {value!r}; choose one of "
                   + ", ".join(_STRATEGIES)),
        help_for={COMPARE: "the transfer arm's strategy (default auto; not scratch, the "
                  "baseline)"})
    epochs: int | None = option(
        None, "gradient epochs through the backbone (default: the strategy's, for the data's "
        f"modality: {EPOCHS}; 3 for pair training on texts); the budget scratch gets too",
        rule=Optional(Number(1, integer=True)),
        help_for={COMPARE: f"gradient epochs of every arm (default {EPOCHS})"})
    lr: float | None = option(
        None, "top learning rate (default: the strategy's, for the data's modality)",
        rule=Optional(Number(0, INF, closed="neither",
                             expected="a positive finite learning rate such as 1e-3")))
    unfreeze: str = option("all", "fine_tune, contrastive: N top groups, or all; top_tune "
                           "(auto on images): N top groups, all meaning the top 2",
                           rule=AsText(), commands=_MODEL)
    cut: str = option(
        "auto", "images: auto (default) also measures earlier layer cuts of the backbone and "
        "keeps one where it clearly beats the whole network; none: the whole network (a "
        "particular cut: --backbone NAME@GROUP)", commands={TRAIN, COMPARE},
        rule=OneOf(("auto", "none"), message="cut must be auto or none, got {value!r}; to train "
                   "a particular cut, name it as the backbone (e.g. --backbone "
                   "efficientnet_lite0@stage6)"))
    input_size: int | str = option(
        "auto", "image side in pixels, or auto (measured on a sample of the data); texts: the "
        "encoder's window, always", flags=("--input-size", "--image-size"),
        rule=AutoOr(Number(8, 1024, integer=True, expected="from 8 to 1024"),
                    "a number of pixels"))
    batch_size: int = option(32, "examples per batch", rule=Number(1, integer=True))
    val_fraction: float = option(0.2, "share of the labels held back to validate on",
                                 rule=Number(0, 1, closed="left", expected="in [0, 1)"))
    seed: int = option(0, "seed of the split, the head's init and the batches",
                       rule=Number(0, 2**32, closed="left", integer=True,
                                   expected=f"a whole number from 0 to {2**32 - 1}"),
                       help_for={COMPARE: "first seed; also the test split's"})
    patience: int | None = option(
        None, f"early stopping: epochs without validation improvement (default {PATIENCE}; "
        "fine-tuning a source model you pre-trained: its whole schedule)",
        rule=Optional(Number(1, integer=True)))
    flip: bool = option(True, "horizontal flips (augmentation, cached views, test-time "
                        "averaging), which text in images and digits do not want")
    augment: bool = option(True, "random crops when fine-tuning")
    C: float = option(1.0, "inverse L2 strength of the closed-form head (as in scikit-learn)",
                      rule=Number(0, INF, closed="neither",
                                  expected="a positive inverse regularisation strength"),
                      flags=())
    weights: str | None = option(None, "your own weights for the backbone: file, folder or URL",
                                 commands=_MODEL)
    skip_bad: bool = option(False, "skip unreadable inputs, listed, instead of stopping")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "largest image decoded, in pixels",
                             rule=Number(1, integer=True, expected="a positive number of pixels"),
                             commands={TRAIN, PRETRAIN})
    workers: int = option(0, "DataLoader worker processes for fine-tuning",
                          rule=Number(0, integer=True,
                                      expected="0 (load in this process) or more"),
                          commands={TRAIN, PRETRAIN})
    precision: str = option("auto", "auto (on the CPU: bf16 where it has it, for large inputs; "
                            "on a GPU: bf16, or fp16 with loss scaling where it lacks bf16), "
                            "fp32 or bf16", rule=OneOf(("auto", "fp32", "bf16")),
                            commands={TRAIN, PRETRAIN})
    device: str = option("auto", "where to train: auto (a CUDA GPU when PyTorch sees one, else "
                         "the CPU; under torchrun the local rank's GPU), cpu, cuda or cuda:N",
                         rule=Matches(re.compile(r"auto|cpu|cuda(:\d+)?"),
                                      "auto, cpu, cuda or cuda:N (such as cuda:0)"))
    channels_last: bool = option(True, "image batches in channels-last memory layout",
                                 flags=())
    bn_stats: str = option("auto", "BatchNorm running statistics while fine-tuning (auto: keep "
                           "pre-trained ones; keep; update)",
                           rule=OneOf(("auto", "keep", "update")), commands={TRAIN, PRETRAIN})
    refit: str = option(
        "head", "after validation has chosen the model, learn from the validation examples "
        "too. head (default): refit the final closed-form head (linear_probe, contrastive) on "
        "training + validation; full: also train again from the start on training + "
        "validation for the epochs validation chose (about twice the time); none: keep the "
        "training-split model", rule=OneOf(REFIT_MODES, expected="one of head, full, none"),
        commands={TRAIN})
    l2sp: float = option(0.0, "L2-SP strength (e.g. 0.01): pull fine-tuned weights towards the "
                         "pre-trained ones (0: off)", commands=_MODEL,
                         rule=Number(0, 1e4, closed="left",
                                     expected="0 (off) or a positive strength such as 0.01"))
    text_column: str | None = option(None, "texts: the column holding the text (default: text, "
                                     "sentence, content, ...)")
    label_column: str | None = option(None, "the column holding the label (default: label, "
                                      "category, class, topic, ...)")
    encoding: str = option("utf-8", "texts: file encoding (default utf-8; e.g. cp1252 for old "
                           "Windows files)")
    truncate: bool = option(False, "texts: keep only the first window of long texts (default: "
                            "split into windows and pool)")
    layers: int | str = option(
        1, "texts: features pool the last N transformer layers, concatenated (default 1, the "
        "sentence embedding); auto measures 1, 2 and 4 by cross-validation on the training "
        "texts", rule=AutoOr(Number(1, integer=True), "a number of layers"),
        commands={TRAIN, PRETRAIN})
    def validate(self) -> "TrainConfig":
        """Check every option against the schema (normalising numbers and 'auto'); the first
        that fails is a ConfigError saying what was expected."""
        values = upgrade(self.to_dict())
        for opt in options(type(self)):
            setattr(self, opt.name, opt.check(values[opt.name]))
        return self

    def text_options(self) -> TextOptions:
        return TextOptions(self.text_column, self.label_column, self.encoding)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in upgrade(d).items() if k in known})


# cfg.image_size, the former name, reads and writes input_size
TrainConfig.image_size = property(lambda self: self.input_size,
                                  lambda self, v: setattr(self, "input_size", v),
                                  doc="The former name of input_size.")


def upgrade(d: dict) -> dict:
    """Stored settings of runs written by earlier versions, in today's terms."""
    if isinstance(d.get("refit"), bool):  # before refit had modes: head refit, or none
        d = {**d, "refit": "head" if d["refit"] else "none"}
    if "image_size" in d and "input_size" not in d:  # before input_size had its name
        d = {k if k != "image_size" else "input_size": v for k, v in d.items()}
    return d
