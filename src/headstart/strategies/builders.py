"""The strategies: each is a function that builds a Plan, registered under its name. The
registry is what the CLI's --strategy choices, TrainConfig's validation and `build_plan` read.

`contrastive` is few-shot tuning in the spirit of SetFit (Tunstall et al., 2022): the backbone
first learns from pairs of labelled examples (embeddings of the same class pulled together, of
different classes pushed apart), then a logistic head is fitted on its new embeddings.

Default learning rates and their spread over the layer groups are the modality's
(modalities/image.py, text.py): CNNs and transformers want different ones.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..exceptions import ConfigError
from .plan import Phase, Plan


@dataclass(frozen=True)
class Strategy:
    name: str
    build: Callable[..., Plan]  # (groups, rates, top_lr, *, epochs, unfreeze, modality) -> Plan
    spread: bool = True  # discriminative rates over the layer groups (else one rate for all)
    default_lr: float = 1e-4  # the top rate where the modality's default_lr names none


_REGISTRY: dict[str, Strategy] = {}
EPOCHS = 5  # gradient epochs of a phase where the modality's default_epochs names none
# top_tune's groups by default: the last two (EfficientNet-Lite's last block and its head
# convolution, about a sixth of its compute at 168 px; a text encoder's last layer and pooling)
TOP_GROUPS = 2


def register_strategy(name: str, *, spread: bool = True, default_lr: float = 1e-4):
    """Register a plan builder under `name` (a decorator)."""
    def add(build):
        _REGISTRY[name] = Strategy(name, build, spread, default_lr)
        return build
    return add


def strategy_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def spread_rates(groups: tuple[str, ...], top_lr: float, mult: float) -> dict[str, float]:
    """Discriminative rates: geometric from top_lr/mult (earliest group) to top_lr (latest)."""
    n = len(groups)
    if n == 1:
        return {groups[0]: top_lr}
    return {g: top_lr / mult ** ((n - 1 - i) / (n - 1)) for i, g in enumerate(groups)}


def build_plan(strategy: str, groups: tuple[str, ...], *, epochs: int | None = None,
               lr: float | None = None, unfreeze: int | str = "all",
               modality="image") -> Plan:
    """The plan of `strategy` for a backbone with these layer groups; rates and epochs default
    to the modality's (a name or a Modality)."""
    if strategy not in _REGISTRY:
        raise ConfigError(f"unknown strategy '{strategy}'; choose one of "
                          f"{', '.join(_REGISTRY)}")
    from .. import modalities  # deferred on purpose: the modalities load torch, which the
    # strategies' names (TrainConfig's schema, read by `--help`) do not need
    m = modalities.get(modality)
    s = _REGISTRY[strategy]
    if strategy != "auto":  # auto passes None on to the strategy it adapts with
        epochs = m.default_epochs.get(strategy, EPOCHS) if epochs is None else epochs
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
    top = float(lr if lr is not None else m.default_lr.get(strategy, s.default_lr))
    if not top > 0:
        raise ConfigError(f"learning rate must be positive, got {top}")
    rates = spread_rates(groups, top, m.lr_spread if s.spread else 1.0)
    return s.build(groups, rates, top, epochs=epochs, unfreeze=unfreeze, modality=m, lr=lr)


def _top_groups(groups: tuple[str, ...], unfreeze: int | str) -> tuple[str, ...]:
    if str(unfreeze) == "all":
        return groups
    try:
        n = int(unfreeze)
    except (TypeError, ValueError):
        n = -1
    if not 1 <= n <= len(groups):
        raise ConfigError(f"--unfreeze must be 'all' or a number of groups from 1 to "
                          f"{len(groups)} ({', '.join(groups)}), got {unfreeze!r}")
    return groups[-n:]


def _head(lr: float, **kw) -> Phase:
    return Phase("head", (), (), lr, 1, cached=True, **kw)


# -- the strategies, in the order the CLI lists them ------------------------------------------
@register_strategy("auto")
def auto(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    """Adapt as measured best for the kind of data (the modality's auto_strategy), after a
    probe and mixed with it on validation: a mix of 0 is the probe, so adapting never costs
    validation accuracy."""
    plan = build_plan(modality.auto_strategy, groups, epochs=epochs, lr=lr, unfreeze=unfreeze,
                      modality=modality)
    phases = plan.phases if plan.phases[0].cached else (_head(plan.phases[0].head_lr),
                                                        *plan.phases)
    return replace(plan, strategy="auto", phases=phases, mix=True)


@register_strategy("linear_probe")
def linear_probe(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    return Plan("linear_probe", True, (_head(top),))


@register_strategy("fine_tune")
def fine_tune(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    train = _top_groups(groups, unfreeze)
    return Plan("fine_tune", True, (_head(top), Phase("fine_tune", train,
                                                      tuple(rates[g] for g in train), top,
                                                      epochs)), mix=True)


@register_strategy("top_tune")
def top_tune(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    """The probe, then the top layer groups (--unfreeze N, 'all' meaning TOP_GROUPS) fine-tuned
    on the frozen groups' output, computed once (training/prefix.py), then the mix: surgical
    fine-tuning of the last blocks at a fraction of a fine-tune's cost."""
    train = _top_groups(groups, min(TOP_GROUPS, len(groups)) if str(unfreeze) == "all"
                        else unfreeze)
    return Plan("top_tune", True, (_head(top), Phase("top_tune", train,
                                                     tuple(rates[g] for g in train), top,
                                                     epochs, frozen_maps=True)), mix=True)


@register_strategy("gradual")
def gradual(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    """ULMFiT: the head, then one more group per epoch, from the top."""
    phases = [_head(top)]
    for k in range(1, min(epochs, len(groups)) + 1):
        train = groups[-k:]
        extra = epochs - len(groups) if k == len(groups) else 0
        phases.append(Phase(f"unfreeze_{k}", train, tuple(rates[g] for g in train), top,
                            1 + extra))
    return Plan("gradual", True, tuple(phases), mix=True)


@register_strategy("scratch")
def scratch(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    return Plan("scratch", False, (Phase("scratch", groups, (top,) * len(groups), top, epochs),))


@register_strategy("contrastive", spread=False)  # one rate for every group, as SetFit's
def contrastive(groups, rates, top, *, epochs, unfreeze, modality, lr) -> Plan:
    train = _top_groups(groups, unfreeze)
    return Plan("contrastive", True, (
        Phase("contrastive", train, tuple(rates[g] for g in train), top, epochs,
              objective="pairs"),
        _head(top, fresh=True)))
