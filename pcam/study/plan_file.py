"""The study's plan file (`results/<experiment>/plan.json`): read, and checked arm by arm.

`pcam.study.experiments` writes it (measured costs and planned settings per arm) and plans
from it; a file that is not such a plan (edited by hand, cut short, from other
code) is refused with one line naming the file and the arm, never a traceback.
"""

import json
import math
from pathlib import Path
from typing import Any

from pcam.core.errors import PCamError
from pcam.core.paths import terminal_path
from pcam.run.config import TrainConfig, check_setting

FIX_PLAN = "restore it from git or move it away to plan afresh"


def read_plan(path: Path) -> dict | None:
    """The plan in `path` (None when there is none), every arm checked, else one-line `PCamError`.

    Each arm needs what planning and training read: "cost_key" (the settings its
    costs were measured with), "costs" (finite seconds >= 0, "score" among them),
    "settings" (valid `TrainConfig` values) and, when present, a positive
    "budget_minutes".
    """
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise PCamError(f"cannot read {terminal_path(path)} ({error}); {FIX_PLAN}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("arms"), dict):
        raise PCamError(f"{terminal_path(path)} is not a plan (no 'arms' object); {FIX_PLAN}")
    for name, arm in plan["arms"].items():
        if (problem := _arm_problem(arm)) is not None:
            raise PCamError(f"{terminal_path(path)}: arm {name!r} {problem}; {FIX_PLAN}")
    return plan


def _arm_problem(arm: Any) -> str | None:
    def number(value: Any) -> bool:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and value >= 0)

    if not isinstance(arm, dict):
        return "is not an object"
    if not isinstance(arm.get("cost_key"), dict):
        return "has no 'cost_key' object (the settings its costs were measured with)"
    costs = arm.get("costs")
    if not (isinstance(costs, dict) and "score" in costs and all(map(number, costs.values()))):
        return "has no 'costs' object of seconds >= 0 with a 'score' cost"
    if not isinstance(arm.get("settings"), dict):
        return "has no 'settings' object"
    for key, value in arm["settings"].items():
        try:
            check_setting(key, value)
        except PCamError as error:
            return f"has a bad setting: {error}"
    if "budget_minutes" in arm and not (number(arm["budget_minutes"])
                                        and arm["budget_minutes"] > 0):
        return f"has a budget of {arm['budget_minutes']!r} minutes, not a positive number"
    return None


def check_costs(path: Path, name: str, costs: dict, config: TrainConfig) -> None:
    """`PCamError` unless `costs` (arm `name`'s, in the plan at `path`) has a cost for
    every phase of `config` that `pcam.study.budget.plan_budget` plans (those with epochs)."""
    from pcam.models import get_backbone
    from pcam.train.session import plan_phases

    phases = plan_phases(config, get_backbone(config.model).recipe)
    missing = sorted(p for p, (first, end) in phases.items() if end > first and p not in costs)
    if missing:
        raise PCamError(f"{terminal_path(path)}: arm {name!r} has no cost for "
                        f"{', '.join(missing)} (its phases); {FIX_PLAN}")
