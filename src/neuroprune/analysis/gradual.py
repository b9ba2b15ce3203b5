"""Gradual pruning during training (prune-train co-optimisation).

A schedule raises the fraction of masked neurons while training runs; masked weights are kept at
zero after every optimizer step; at the end the masked neurons are removed by surgery.

Use it from your own training loop::

    pruner = GradualPruner(model, example_input, ratio=0.5, start=100, end=1000)
    for step, batch in enumerate(batches):
        loss = ...; loss.backward(); optimizer.step(); optimizer.zero_grad()
        pruner.step(step)                    # after optimizer.step()
    small, plan = pruner.finalize()          # physically smaller model + replayable plan

Example:
    >>> [round(agp_fraction(t, start=0, end=10, final=0.8), 3) for t in (0, 5, 10)]
    [0.0, 0.7, 0.8]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from neuroprune.core.backend import backend_for
from neuroprune.core.errors import ConfigError, NoPrunableLayerError, UnknownNameError
from neuroprune.core.plan import PruningPlan
from neuroprune.core.criteria import ScoringInput, score
from neuroprune.core.selection import lowest_units


def agp_fraction(step: int, *, start: int, end: int, final: float, initial: float = 0.0, frequency: int = 1) -> float:
    """Cubic schedule of Zhu & Gupta (2017): ``s = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3``.

    ``step`` is rounded down to a multiple of ``frequency`` after ``start``; before ``start`` the
    fraction is ``initial``, from ``end`` on it is ``final``.
    """
    if step < start:
        return initial
    if step >= end:
        return final
    t = start + ((step - start) // frequency) * frequency
    progress = (t - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** 3


def linear_fraction(step: int, *, start: int, end: int, final: float, initial: float = 0.0, frequency: int = 1) -> float:
    """Straight line from ``initial`` at ``start`` to ``final`` at ``end``."""
    if step < start:
        return initial
    if step >= end:
        return final
    t = start + ((step - start) // frequency) * frequency
    return initial + (final - initial) * (t - start) / (end - start)


SCHEDULES: dict[str, Callable[..., float]] = {"agp": agp_fraction, "linear": linear_fraction}


class GradualPruner:
    """Masks a growing fraction of every group's neurons as training proceeds.

    Args:
        model: the model being trained (masked in place; removed for real by :meth:`finalize`).
        example_inputs: one input batch, for dependency discovery.
        ratio: final fraction of each group's neurons to remove.
        start, end: training steps between which the fraction grows.
        frequency: update the masks every this many steps.
        schedule: ``"agp"`` (cubic) or ``"linear"``.
        criterion: a weight-based criterion (``magnitude``, ``random``); neurons once masked stay masked.
    """

    def __init__(self, model: Any, example_inputs: Any, *, ratio: float, start: int, end: int,
                 frequency: int = 1, schedule: str = "agp", criterion: str = "magnitude", min_width: int = 1,
                 ignore: tuple[str, ...] = ()):
        problems = []
        if not 0 <= ratio < 1:
            problems.append(f"ratio must lie in [0, 1), got {ratio}")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            problems.append(f"need 0 <= start < end, got start={start}, end={end}")
        if frequency < 1:
            problems.append(f"frequency must be >= 1, got {frequency}")
        if criterion not in ("magnitude", "random"):
            problems.append(f"gradual pruning scores with magnitude or random, got {criterion!r}")
        if problems:
            raise ConfigError(problems)
        if schedule not in SCHEDULES:
            raise UnknownNameError("schedule", schedule, SCHEDULES)
        self.model, self.ratio, self.start, self.end, self.frequency = model, ratio, start, end, frequency
        self.schedule, self.criterion, self.min_width = SCHEDULES[schedule], criterion, min_width
        self.backend = backend_for(model)
        self.graph = self.backend.discover(model, example_inputs, ignore=ignore)
        if not self.graph.groups:
            raise NoPrunableLayerError("the model has no prunable layer")
        self.masked: dict[str, np.ndarray] = {g.name: np.zeros(0, dtype=np.int64) for g in self.graph.groups}
        self.fraction = 0.0
        self._handle = None

    def target_fraction(self, step: int) -> float:
        return self.schedule(step, start=self.start, end=self.end, final=self.ratio, frequency=self.frequency)

    def step(self, step: int) -> float:
        """Call after each optimizer step: grow the masks when the schedule says so, and keep
        masked weights at zero. Returns the fraction now masked."""
        fraction = self.target_fraction(step)
        if fraction > self.fraction:
            self._grow(fraction)
        elif self._handle is not None:
            self._handle.reapply()
        return self.fraction

    def _grow(self, fraction: float) -> None:
        options = {"seed": 0} if self.criterion == "random" else {}
        scores = score(ScoringInput(self.model, self.graph, None, self.backend), self.criterion, options)  # weights only
        for group in self.graph.groups:
            count = min(math.floor(fraction * group.size + 1e-9), group.size - max(self.min_width, 1))
            values = scores[group.name].copy()
            values[self.masked[group.name]] = -1.0  # masked neurons stay masked
            self.masked[group.name] = lowest_units(group, values, max(count, len(self.masked[group.name])))
        if self._handle is not None:
            self._handle.commit()  # masked weights are already zero; keep training from here
        self._handle = self.backend.mask(self.model, self.graph.keep_indices(self.masked))
        self.fraction = fraction

    def finalize(self) -> tuple[Any, PruningPlan]:
        """Remove the masked neurons for real; returns the smaller model and its plan."""
        keep = self.graph.keep_indices(self.masked)
        if self._handle is not None:
            self._handle.commit()
            self._handle = None
        pruned = self.backend.apply_keep(self.backend.clone(self.model), keep)
        plan = PruningPlan(adapter=self.backend.name).compose(keep, self.graph.module_types, self.graph.axis_sizes)
        return pruned, plan
