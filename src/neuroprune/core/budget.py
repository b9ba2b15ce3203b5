"""Budget maths: per-layer ratios from sensitivity curves and savings, with no model in sight.

:func:`allocate` gives every layer the ratio that loses least quality per unit saved at one price
of quality (a Lagrangian allocation); :func:`ratios_for_saving` finds the price at which the
predicted saving is met. The search that checks these against *measured* costs lives in
:mod:`neuroprune.analysis.budget`, reaching the model through its backend.

Example:
    >>> drops = {"a": np.linspace(0, 0.19, len(RATIO_GRID)), "b": np.linspace(0, 0.95, len(RATIO_GRID))}
    >>> ratios = ratios_for_saving(drops, {"a": 0.5, "b": 0.5}, cap=0.9, saving=0.25)
    >>> ratios["a"] > ratios["b"], round(1 - predicted_fraction(ratios, {"a": 0.5, "b": 0.5}), 2) >= 0.25
    (True, True)
    >>> Budget(flops=0.5).describe()
    'FLOPs at 50% of the original'
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from neuroprune.core.config import PruneConfig
from neuroprune.core.policy import LayerPolicy

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


def drop_curve(curve: dict[str, Any], reference: float) -> np.ndarray:
    """Quality lost at each ratio of RATIO_GRID: interpolated, non-decreasing, 0 at 0."""
    xs = np.array([0.0] + list(curve["ratios"]))
    ys = np.maximum(0.0, reference - np.array([reference] + list(curve["metric"])))
    return np.maximum.accumulate(np.interp(RATIO_GRID, xs, ys))


def allocate(drops: dict[str, np.ndarray], savings: dict[str, float], lam: float, cap: float) -> dict[str, float]:
    """For each layer the ratio minimising drop - lam * saving (savings are per unit ratio)."""
    grid = RATIO_GRID[RATIO_GRID <= cap + 1e-9]
    return {name: float(grid[np.argmin(drop[: len(grid)] - lam * savings[name] * grid)]) for name, drop in drops.items()}


def predicted_fraction(ratios: dict[str, float], savings: dict[str, float]) -> float:
    """What is left (a fraction of the whole) after removing ``ratios`` of layers saving ``savings`` per unit ratio."""
    return 1.0 - sum(ratios[n] * savings[n] for n in ratios)


def ratios_for_saving(drops: dict[str, np.ndarray], savings: dict[str, float], cap: float,
                      saving: float) -> dict[str, float]:
    """The allocation at the lowest price of quality whose predicted saving reaches ``saving``
    (bisection over the log10 price in [-6, 6]; more price, more pruning)."""
    low, high = -6.0, 6.0
    for _ in range(50):
        middle = (low + high) / 2
        if 1.0 - predicted_fraction(allocate(drops, savings, 10**middle, cap), savings) < saving:
            low = middle
        else:
            high = middle
    return allocate(drops, savings, 10**high, cap)
