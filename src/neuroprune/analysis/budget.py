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

import copy
import glob
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch.nn as nn
from tqdm.auto import tqdm

from neuroprune.torch.adapters import adapter_for
from neuroprune.core.config import PruneConfig
from neuroprune.core.errors import ConfigError, PruningTargetError
from neuroprune.core.policy import LayerPolicy, resolve_policies
from neuroprune.torch.metrics import count_flops, count_parameters, measure_latency_ms
from neuroprune.core.loop import score_groups
from neuroprune.core.selection import counts_for_ratio, select_units
from neuroprune.analysis.sensitivity import analyse_sensitivity
from neuroprune.torch.surgery import apply_keep
from neuroprune.torch.masks import apply_masks

RATIO_GRID = np.round(np.arange(0.0, 0.951, 0.05), 2)


@dataclass(frozen=True)
class Budget:
    """A target as a fraction of the original model (give exactly one)."""

    flops: float | None = None
    params: float | None = None
    latency: float | None = None
    max_drop: float | None = None

    def problems(self) -> list[str]:
        given = {k: getattr(self, k) for k in ("flops", "params", "latency", "max_drop") if getattr(self, k) is not None}
        p = [] if len(given) == 1 else [f"give exactly one budget target, got {', '.join(given) or 'none'}"]
        for name, value in given.items():
            low_ok = value >= 0 if name == "max_drop" else value > 0
            if not (isinstance(value, (int, float)) and low_ok and value < 1):
                p.append(f"target {name} must lie in {'[0, 1)' if name == 'max_drop' else '(0, 1)'}, got {value}")
        return p

    @property
    def quantity(self) -> str:
        return next(k for k in ("flops", "params", "latency") if getattr(self, k) is not None) if self.max_drop is None else "flops"

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"largest FLOPs reduction within a validation drop of {self.max_drop}"
        label = {"flops": "FLOPs", "params": "parameters", "latency": "latency"}[self.quantity]
        return f"{label} at {getattr(self, self.quantity) * 100:.3g}% of the original"


@dataclass
class BudgetResult:
    """Per-layer ratios found, what they achieve, and how the search got there."""

    ratios: dict[str, float]
    achieved: dict[str, float]
    sensitivity: dict[str, Any]
    probes: list[dict[str, Any]] = field(default_factory=list)

    def config(self, config: PruneConfig) -> PruneConfig:
        """``config`` with one layer policy per searched ratio appended."""
        policies = tuple(LayerPolicy(pattern=glob.escape(name), ratio=ratio) for name, ratio in self.ratios.items())
        return replace(config, layers=config.layers + policies)


class _CostMeter:
    """Measures a quantity of the model pruned by an allocation, as a fraction of the original."""

    def __init__(self, work, graph, scores, settings, task, quantity: str):
        self.work, self.graph, self.scores, self.settings, self.task = work, graph, scores, settings, task
        self.quantity = quantity
        self.example = task.make_input(1)
        self.full = self._measure(work)
        self.skip = {n for n, s in settings.items() if s.ignore}
        self.min_widths = {n: s.min_width for n, s in settings.items()}
        self.sizes = {g.name: g.size for g in graph.groups}
        self.cost = None  # latency is measured; FLOPs and parameters come from the analytic model
        if quantity in ("params", "flops"):
            from neuroprune.torch.cost_model import CostModel

            self.cost = CostModel.record(work, graph, quantity, self.example, skip=self.skip, min_widths=self.min_widths)

    def _measure(self, model: nn.Module) -> float:
        if self.quantity == "params":
            return float(count_parameters(model))
        if self.quantity == "latency":
            return measure_latency_ms(model, self.task.make_input(32), runs=15, warmup=3)
        return float(count_flops(model, self.example))

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
        return self._measure(apply_keep(self.work, keep)) / self.full if keep else 1.0


def _drop_curve(curve: dict[str, Any], reference: float) -> np.ndarray:
    """Quality lost at each ratio of RATIO_GRID: interpolated, non-decreasing, 0 at 0."""
    xs = np.array([0.0] + list(curve["ratios"]))
    ys = np.maximum(0.0, reference - np.array([reference] + list(curve["metric"])))
    return np.maximum.accumulate(np.interp(RATIO_GRID, xs, ys))


def _allocate(drops: dict[str, np.ndarray], savings: dict[str, float], lam: float, cap: float) -> dict[str, float]:
    """For each layer the ratio minimising drop - lam * saving (savings are per unit ratio)."""
    grid = RATIO_GRID[RATIO_GRID <= cap + 1e-9]
    return {name: float(grid[np.argmin(drop[: len(grid)] - lam * savings[name] * grid)]) for name, drop in drops.items()}


def _predicted(ratios: dict[str, float], savings: dict[str, float]) -> float:
    return 1.0 - sum(ratios[n] * savings[n] for n in ratios)


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


def search_budget(model: nn.Module, task, config: PruneConfig, budget: Budget, *, sensitivity: dict | None = None,
                  tolerance: float = 0.02, progress: bool = True) -> BudgetResult:
    """Per-layer ratios meeting ``budget``; see the module docstring for the method.

    Args:
        tolerance: relative precision of the measured target (FLOPs and parameters: 0.02 = 2%).
    """
    problems = budget.problems()
    if problems:
        raise ConfigError(problems)
    work = copy.deepcopy(model)
    if hasattr(task, "bind"):
        task.bind(work)
    adapter = adapter_for(work)
    graph = adapter.discover(work, task.example_input(), ignore=config.ignore,
                            ignore_untraceable=config.ignore_untraceable)
    settings = resolve_policies(graph, config)
    scores = score_groups(work, graph, task, config, settings, desc="scoring")
    meter = _CostMeter(work, graph, scores, settings, task, budget.quantity)
    free = [g.name for g in graph.groups if not settings[g.name].ignore and settings[g.name].ratio is None]
    fixed_ratios = {n: s.ratio for n, s in settings.items() if s.ratio is not None and not s.ignore}
    _check_reachable(budget, meter, {**fixed_ratios, **{n: float(RATIO_GRID[-1]) for n in free}}, tolerance)
    if sensitivity is None:
        sensitivity = analyse_sensitivity(work, task, config, progress=progress)
    reference = sensitivity["reference"]
    cap = max((max(c["ratios"]) for c in sensitivity["layers"].values()), default=0.9)
    drops = {n: _drop_curve(sensitivity["layers"][n], reference) for n in free if n in sensitivity["layers"]}
    # what removing half of one layer saves, as a fraction of the whole, per unit ratio
    savings = {n: (1.0 - meter.fraction({**fixed_ratios, n: 0.5})) / 0.5 for n in drops}
    probes: list[dict[str, Any]] = []

    def ratios_for(saving: float) -> dict[str, float]:
        low, high = -6.0, 6.0  # log10 of the price of quality; more price, more pruning
        for _ in range(50):
            middle = (low + high) / 2
            if 1.0 - _predicted(_allocate(drops, savings, 10**middle, cap), savings) < saving:
                low = middle
            else:
                high = middle
        return _allocate(drops, savings, 10**high, cap)

    def measured(target: float, base: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
        base = base if base is not None else ratios_for(1.0 - target)
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
            with apply_masks(work, meter.keep(ratios)):
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
        with apply_masks(work, meter.keep(ratios)):
            drop = full_metric - task.evaluate(work, "val")
        probes.append({"target": target, "flops": value, "drop": drop})
        if drop <= budget.max_drop:
            best, high = (ratios, value, drop), target
        else:
            low = target
    return BudgetResult(best[0], {"flops": best[1], "drop": best[2]}, sensitivity, probes)
