"""Budget search: non-uniform per-layer ratios that meet a FLOPs, parameter or latency target.

From each layer's sensitivity curve (quality lost vs fraction removed) and what removing its
neurons saves, a Lagrangian allocation gives every layer the ratio that loses least quality per
unit saved; the ratios are then scaled together until the *measured* cost of the physically
pruned model meets the target. Sensitivity curves are measured one layer at a time, so the
allocation is checked against the interactions they miss: it, one uniform ratio and their
average, each meeting the target, are applied as masks and the one with the best validation
quality wins (so the result is never worse on validation than a uniform ratio). ``max_drop``
instead finds the largest reduction whose masked validation drop stays within the limit.

Example:
    >>> Budget(flops=0.5).describe()
    'FLOPs at 50% of the original'
"""

from __future__ import annotations

import math
from typing import Any

from tqdm.auto import tqdm

from neuroprune.analysis.sensitivity import analyse_sensitivity
from neuroprune.core.backend import backend_for, masked
from neuroprune.core.budget import RATIO_GRID, Budget, BudgetResult, drop_curve, ratios_for_saving
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError, PruningTargetError
from neuroprune.core.policy import resolve_policies
from neuroprune.core.scoring_pass import score_groups
from neuroprune.core.selection import counts_for_ratio, select_units
from neuroprune.core.tasks import bind_task

__all__ = ["RATIO_GRID", "Budget", "BudgetResult", "search_budget"]


class _CostMeter:
    """Measures a quantity of the model pruned by an allocation, as a fraction of the original."""

    def __init__(self, backend, work, graph, scores, settings, task, quantity: str):
        self.backend, self.work, self.graph, self.scores, self.task = backend, work, graph, scores, task
        self.quantity = quantity
        self.full = backend.measure_cost(work, task, quantity)
        self.skip = {n for n, s in settings.items() if s.ignore}
        self.min_widths = {n: s.min_width for n, s in settings.items()}
        self.sizes = {g.name: g.size for g in graph.groups}
        self.cost = None  # latency is measured; FLOPs and parameters come from the analytic model
        if quantity in ("params", "flops"):
            self.cost = backend.cost_model(work, graph, task, quantity, skip=self.skip, min_widths=self.min_widths)

    def _counts(self, ratios: dict[str, float]) -> dict[str, int]:
        return counts_for_ratio(self.graph, self.scores, {}, 0.0, ratios=ratios, min_widths=self.min_widths,
                                skip=self.skip)

    def keep(self, ratios: dict[str, float]):
        return self.graph.keep_indices(select_units(self.graph, self.scores, self._counts(ratios)))

    def fraction(self, ratios: dict[str, float]) -> float:
        if self.cost is not None:
            removed = self._counts(ratios)
            return self.cost.value({n: self.sizes[n] - k for n, k in removed.items() if k}) / self.full
        keep = self.keep(ratios)
        if not keep:
            return 1.0
        pruned = self.backend.apply_keep(self.backend.clone(self.work), keep)
        return self.backend.measure_cost(pruned, self.task, self.quantity) / self.full


def _check_reachable(budget: Budget, meter: _CostMeter, most: dict[str, float], tolerance: float) -> None:
    """Refuse a FLOPs or parameter budget that even the most pruning the search allows cannot meet."""
    if budget.max_drop is not None or budget.quantity == "latency":  # latency: too noisy to refuse up front
        return
    target = getattr(budget, budget.quantity)
    floor = meter.fraction(most)
    if floor > target * (1 + tolerance):
        label = {"flops": "FLOPs", "params": "parameters"}[budget.quantity]
        raise PruningTargetError(
            f"cannot reach {budget.describe()}: removing as much as the search allows ({RATIO_GRID[-1]:.0%} of every "
            f"prunable layer's neurons, min_width and ignored layers respected) still leaves {floor:.1%} of the "
            f"{label}; ask for --target-{budget.quantity} {math.ceil(floor * 1000) / 1000:g} or more")


def search_budget(model: Any, task, config: PruneConfig, budget: Budget, *, sensitivity: dict | None = None,
                  tolerance: float = 0.02, progress: bool = True) -> BudgetResult:
    """Per-layer ratios meeting ``budget``; see the module docstring for the method.

    Args:
        tolerance: relative precision of the measured target (FLOPs and parameters: 0.02 = 2%).
    """
    problems = budget.problems()
    if problems:
        raise ConfigError(problems)
    backend = backend_for(model)
    work = backend.clone(model)
    bind_task(task, work)
    graph = backend.discover(work, task.example_input(), ignore=config.ignore,
                            ignore_untraceable=config.ignore_untraceable)
    settings = resolve_policies(graph, config)
    scores = score_groups(work, graph, task, config, settings, desc="scoring", backend=backend)
    meter = _CostMeter(backend, work, graph, scores, settings, task, budget.quantity)
    free = [g.name for g in graph.groups if not settings[g.name].ignore and settings[g.name].ratio is None]
    fixed_ratios = {n: s.ratio for n, s in settings.items() if s.ratio is not None and not s.ignore}
    _check_reachable(budget, meter, {**fixed_ratios, **{n: float(RATIO_GRID[-1]) for n in free}}, tolerance)
    if sensitivity is None:
        sensitivity = analyse_sensitivity(work, task, config, progress=progress)
    reference = sensitivity["reference"]
    cap = max((max(c["ratios"]) for c in sensitivity["layers"].values()), default=0.9)
    drops = {n: drop_curve(sensitivity["layers"][n], reference) for n in free if n in sensitivity["layers"]}
    # what removing half of one layer saves, as a fraction of the whole, per unit ratio
    savings = {n: (1.0 - meter.fraction({**fixed_ratios, n: 0.5})) / 0.5 for n in drops}
    probes: list[dict[str, Any]] = []

    def measured(target: float, base: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
        base = base if base is not None else ratios_for_saving(drops, savings, cap, 1.0 - target)
        low, high, best = 0.0, 1.0 / max(max(base.values(), default=0.0), 0.05), None
        for _ in range(25):  # scale the allocation until the measured quantity meets the target
            scale = (low + high) / 2
            ratios = {**fixed_ratios, **{n: min(0.95, r * scale) for n, r in base.items()}}
            value = meter.fraction(ratios)
            probes.append({"target": target, "scale": scale, budget.quantity: value})
            if best is None or abs(value - target) < abs(best[1] - target):
                best = (ratios, value)
            if abs(value - target) <= tolerance * target:
                break
            low, high = (scale, high) if value > target else (low, scale)
        return refine(*best, target)

    def refine(ratios: dict[str, float], value: float, target: float) -> tuple[dict[str, float], float]:
        """Move single layers by one neuron at a time while that brings the measure closer."""
        sizes = {g.name: g.size for g in graph.groups}
        for _ in range(50):
            if abs(value - target) <= tolerance * target:
                break
            step = 1 if value > target else -1
            candidates = []
            for name in drops:
                moved = ratios[name] + step / sizes[name]
                if 0 <= moved <= cap + 1e-9:
                    trial = {**ratios, name: moved}
                    candidates.append((abs(meter.fraction(trial) - target), name, trial))
            if not candidates or min(candidates)[0] >= abs(value - target):
                break
            gap, _, ratios = min(candidates, key=lambda c: c[0])
            value = meter.fraction(ratios)
        return ratios, value

    def best_on_validation(target: float, searched: tuple[dict[str, float], float]) -> tuple[dict[str, float], float]:
        """The searched allocation, one uniform ratio, or their average: whichever keeps the most
        validation quality under masks (each meets the target)."""
        uniform = measured(target, {n: 1.0 for n in drops})
        average = measured(target, {n: (searched[0][n] + uniform[0][n]) / 2 for n in drops})
        scored = []
        for label, (ratios, value) in (("searched", searched), ("average", average), ("uniform", uniform)):
            with masked(backend, work, meter.keep(ratios)):
                metric = task.evaluate(work, "val")
            probes.append({"target": target, "candidate": label, budget.quantity: value, "metric": metric})
            if abs(value - target) <= tolerance * target:
                scored.append((metric, label == "searched", ratios, value))
        if not scored:
            return searched
        _, _, ratios, value = max(scored, key=lambda s: (s[0], s[1]))
        return ratios, value

    if budget.max_drop is None:
        target = getattr(budget, budget.quantity)
        ratios, value = measured(target)
        if abs(value - target) > tolerance * target and value > 1 - 1e-9:
            raise PruningTargetError(f"cannot reach {budget.describe()}: the prunable layers allow at most {value:.0%}")
        if drops and budget.quantity != "latency":  # latency measurements are too noisy to compare candidates
            ratios, value = best_on_validation(target, (ratios, value))
        return BudgetResult(ratios, {budget.quantity: value}, sensitivity, probes)
    full_metric = task.evaluate(work, "val")
    best = ({**fixed_ratios, **{n: 0.0 for n in free}}, 1.0, 0.0)
    low, high = 0.05, 1.0
    bar = tqdm(range(8), desc="budget search", disable=not progress, leave=False)
    for _ in bar:
        target = (low + high) / 2
        ratios, value = measured(target)
        with masked(backend, work, meter.keep(ratios)):
            drop = full_metric - task.evaluate(work, "val")
        probes.append({"target": target, "flops": value, "drop": drop})
        if drop <= budget.max_drop:
            best, high = (ratios, value, drop), target
        else:
            low = target
    return BudgetResult(best[0], {"flops": best[1], "drop": best[2]}, sensitivity, probes)
