"""Strategies are plans: phases saying which layer groups train, at which rates, how long
(plan.py), built by the registered strategies (builders.py)."""
from .builders import EPOCHS, build_plan, register_strategy, spread_rates, strategy_names
from .plan import Phase, Plan, apply_phase, param_groups, selected_plan

STRATEGIES = strategy_names()

__all__ = ["EPOCHS", "STRATEGIES", "Phase", "Plan", "apply_phase", "build_plan", "param_groups",
           "register_strategy", "selected_plan", "spread_rates", "strategy_names"]
