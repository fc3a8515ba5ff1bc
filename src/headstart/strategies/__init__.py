"""Strategies are plans: phases saying which layer groups train, at which rates, how long."""
from .plan import STRATEGIES, Phase, Plan, apply_phase, build_plan, param_groups, selected_plan

__all__ = ["STRATEGIES", "Phase", "Plan", "apply_phase", "build_plan", "param_groups",
           "selected_plan"]
