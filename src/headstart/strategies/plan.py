"""A strategy's plan, and applying a phase of it to a model.

A plan is data: a list of phases. Each names the backbone groups that train (the head always
trains, except under the pair objective), the learning rate of each, the number of epochs, the
objective, and whether features may come from the cache (only when no backbone group trains).
One trainer runs any plan; the strategies that build plans are in builders.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the strategies' names are read by `--help`, without torch
    from torch import nn

OBJECTIVES = ("classify", "pairs")


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
    # the frozen groups below train_groups run once, their output maps held in memory, and
    # the epochs run the trained groups alone on them (training/prefix.py)
    frozen_maps: bool = False

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
        if self.frozen_maps:
            what += " on the frozen groups' cached output"
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
    # pair training leaves a text encoder's token-embedding table as it is: the rows of tokens
    # in no training text get no gradient, only the weight decay, and the table as a whole
    # moved 0.000 (relative L2) in measured runs, while updating it (MiniLM: 11.7M of its 22.7M
    # weights) cost a dense AdamW step over it at every pair step. On dev splits of BBC
    # headlines (8 per class, seeds 0-4; README) the same accuracy in about 0.9x the time
    table = model.backbone.token_table() if phase.objective == "pairs" else None
    if table is not None:
        table.requires_grad_(False)
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
        params = [p for m in groups[g] for p in m.parameters() if p.requires_grad]
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
