"""Build a strategy's plan and apply a phase of it to a model.

A plan is data: a list of phases. Each names the backbone groups that train (the head always
trains, except under the pair objective), the learning rate of each, the number of epochs, the
objective, and whether features may come from the cache (only when no backbone group trains).
One trainer runs any plan.

`contrastive` is few-shot tuning in the spirit of SetFit (Tunstall et al., 2022): the backbone
first learns from pairs of labelled examples (embeddings of the same class pulled together, of
different classes pushed apart), then a logistic head is fitted on its new embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from ..exceptions import ConfigError

STRATEGIES = ("auto", "linear_probe", "fine_tune", "gradual", "scratch", "contrastive")
# Adam(W) moves every weight by about the rate per step, whatever its gradient: 1e-3 is ~10% of
# a typical pre-trained conv weight per step, which wrecks the features the head was fitted on
# (measured on animal-mnist pool images: validation fell 7 points in the first epoch); 1e-4 at
# the top, 10x less at the stem, adapts without losing them.
DEFAULT_LR = {"linear_probe": 1e-3, "fine_tune": 1e-4, "gradual": 1e-4, "scratch": 3e-3,
              "contrastive": 1e-4}
# Transformers need far smaller steps than CNNs (BERT's own fine-tuning rates are 2e-5..1e-4)
DEFAULT_LR_TEXT = {"linear_probe": 1e-3, "fine_tune": 1e-4, "gradual": 1e-4, "scratch": 5e-4,
                   "contrastive": 2e-5}
# `auto` adapts the way that measured best for the kind of data, guarded by the probe: images
# fine-tune (LP-FT, then the mix validation prefers); texts tune the encoder on pairs of
# examples (SetFit-style; on BBC News it beat fine-tuning at 8 per class and on all articles),
# also mixed with the frozen encoder. A mix of 0 is the probe: adapting never costs validation
# accuracy.
AUTO = {"image": "fine_tune", "text": "contrastive"}
OBJECTIVES = ("classify", "pairs")
LR_MULT = 10.0  # earliest group's rate = top rate / LR_MULT (as fastai's slice(lo, hi))
# Transformers: layer-wise rate decay of about 0.8 per layer (ELECTRA's fine-tuning recipe,
# Clark et al. 2020), i.e. about 5x from the top layer down to the embeddings of a 6-layer
# encoder. A CNN-style 100x spread leaves a transformer's lower layers practically frozen.
LR_MULT_TEXT = 5.0
# contrastive: one rate for every trained group, as SetFit trains the sentence encoder


@dataclass(frozen=True)
class Phase:
    name: str
    train_groups: tuple[str, ...]
    group_lrs: tuple[float, ...]
    head_lr: float
    epochs: int
    cached: bool = False  # head only, fitted in closed form on features, no gradient epochs
    objective: str = "classify"  # or "pairs": the backbone alone learns from example pairs
    fresh: bool = False  # cached phase whose features come from the tuned backbone, not the cache
    # the learning-rate schedule spans this many epochs (0: `epochs`); a phase cut short by
    # --refit full follows the schedule of the full phase it replays
    schedule_epochs: int = 0

    def describe(self) -> str:
        if self.cached and self.fresh:
            return f"{self.name}: head only, on the tuned backbone's features"
        if self.cached:
            return f"{self.name}: head only, on cached frozen features"
        if not self.train_groups:
            return f"{self.name}: head only, {self.epochs} epoch(s)"
        lo, hi = min(self.group_lrs), max(self.group_lrs)
        rates = f"lr {hi:.1e}" if lo == hi else f"lr {lo:.1e}..{hi:.1e}"
        what = "on pairs of examples (the head waits)" if self.objective == "pairs" else "+ head"
        return (f"{self.name}: {len(self.train_groups)} group(s) "
                f"{self.train_groups[0]}..{self.train_groups[-1]} {what}, {rates}, "
                f"{self.epochs} epoch(s)")


@dataclass(frozen=True)
class Plan:
    strategy: str
    pretrained: bool
    phases: tuple[Phase, ...] = field(default_factory=tuple)
    # after the gradient phases, keep the mix of the probe and the fine-tuned weights that
    # validation prefers (training/mixing.py); mix 0 is the probe itself
    mix: bool = False

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


def spread_rates(groups: tuple[str, ...], top_lr: float, mult: float = LR_MULT) -> dict[str, float]:
    """Discriminative rates: geometric from top_lr/mult (earliest group) to top_lr (latest)."""
    n = len(groups)
    if n == 1:
        return {groups[0]: top_lr}
    return {g: top_lr / mult ** ((n - 1 - i) / (n - 1)) for i, g in enumerate(groups)}


def build_plan(strategy: str, groups: tuple[str, ...], *, epochs: int = 5,
               lr: float | None = None, unfreeze: int | str = "all",
               modality: str = "image") -> Plan:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if strategy == "auto":
        plan = build_plan(AUTO[modality], groups, epochs=epochs, lr=lr, unfreeze=unfreeze,
                          modality=modality)
        head = Phase("head", (), (), plan.phases[0].head_lr, 1, cached=True)
        phases = plan.phases if plan.phases[0].cached else (head, *plan.phases)
        return replace(plan, strategy="auto", phases=phases, mix=True)
    defaults = DEFAULT_LR_TEXT if modality == "text" else DEFAULT_LR
    lr = float(lr if lr is not None else defaults[strategy])
    if not lr > 0:
        raise ConfigError(f"learning rate must be positive, got {lr}")
    mult = 1.0 if strategy == "contrastive" else LR_MULT_TEXT if modality == "text" else LR_MULT
    rates = spread_rates(groups, lr, mult)
    head = Phase("head", (), (), lr, 1, cached=True)
    if strategy == "linear_probe":
        return Plan(strategy, True, (head,))
    if strategy == "scratch":
        return Plan(strategy, False, (Phase("scratch", groups, (lr,) * len(groups), lr, epochs),))
    if strategy == "contrastive":
        top = _top_groups(groups, unfreeze)
        return Plan(strategy, True, (
            Phase("contrastive", top, tuple(rates[g] for g in top), lr, epochs,
                  objective="pairs"),
            Phase("head", (), (), lr, 1, cached=True, fresh=True)))
    if strategy == "fine_tune":
        top = _top_groups(groups, unfreeze)
        return Plan(strategy, True, (head, Phase("fine_tune", top, tuple(rates[g] for g in top),
                                                 lr, epochs)), mix=True)
    phases = [head]  # gradual (ULMFiT): one more group per epoch, from the top
    for k in range(1, min(epochs, len(groups)) + 1):
        top = groups[-k:]
        extra = epochs - len(groups) if k == len(groups) else 0
        phases.append(Phase(f"unfreeze_{k}", top, tuple(rates[g] for g in top), lr, 1 + extra))
    return Plan(strategy, True, tuple(phases), mix=True)


def selected_plan(plan: Plan, best_at: tuple[int, int]) -> Plan:
    """The part of `plan` that validation chose: its phases up to the one holding the best
    state, that one cut at the best epoch (its learning-rate schedule still that of the whole
    phase), then any fresh head phase that finishes the body.
    This is what `--refit full` re-runs on training + validation examples."""
    pi, epoch = best_at
    best = plan.phases[pi]
    if not best.cached:  # the same rates, step for step, as the epochs validation chose
        best = replace(best, epochs=max(1, epoch), schedule_epochs=best.epochs)
    phases = [*plan.phases[:pi], best]
    phases += [p for p in plan.phases[pi + 1:] if p.fresh]
    return replace(plan, phases=tuple(replace(p, name=f"refit:{p.name}") for p in phases))


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


def apply_phase(model, phase: Phase) -> None:
    """Set requires_grad by group and record frozen groups for the BatchNorm policy.

    Parameters are matched by identity (module membership), never by name patterns."""
    groups = model.backbone.group_modules()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for g in phase.train_groups:
        for p in (p for m in groups[g] for p in m.parameters()):
            p.requires_grad_(True)
    for p in model.head.parameters():  # under the pair objective the head waits for its fit
        p.requires_grad_(phase.objective != "pairs")
    model.frozen = tuple(g for g in groups if g not in phase.train_groups)
    model.train(model.training)  # re-apply BatchNorm policy now


def param_groups(model, phase: Phase, *, weight_decay: float = 0.01,
                 backbone_decay: float | None = None) -> list[dict]:
    """Optimizer groups: one per trainable layer group at its rate, then the head.
    backbone_decay (default: weight_decay) is 0 under L2-SP, which pulls towards the
    pre-trained weights instead of towards zero."""
    groups = model.backbone.group_modules()
    decay = weight_decay if backbone_decay is None else backbone_decay
    out = []
    for g, lr in zip(phase.train_groups, phase.group_lrs):
        params = [p for m in groups[g] for p in m.parameters()]
        if not params:  # e.g. a text encoder's pooling: no weights
            continue
        out += _decay_split(params, lr=lr, name=g, decay=decay)
    if phase.objective != "pairs":
        out += _decay_split(list(model.head.parameters()), lr=phase.head_lr, name="head",
                            decay=weight_decay)
    return out


def _decay_split(params: list, *, lr: float, name: str, decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: never on biases and normalisation
    scales (1-d parameters), whose pull towards zero is no regulariser but a shift of every
    activation (as in BERT's and timm's fine-tuning recipes)."""
    groups = [{"params": [p for p in params if p.ndim > 1], "lr": lr, "name": name,
               "weight_decay": decay},
              {"params": [p for p in params if p.ndim <= 1], "lr": lr, "name": f"{name}:no_decay",
               "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
