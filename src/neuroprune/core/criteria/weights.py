"""Criteria read from the weights: ``magnitude``, ``gradient`` and the write-up's ``seed`` formula.

Example:
    >>> import numpy as np
    >>> w = np.array([[0.8, 0.3, 0.5], [0.2, 0.6, 0.1]])
    >>> g = np.array([[0.4, 0.1, 0.2], [0.05, 0.3, 0.1]])
    >>> f = np.array([[10.0, 5, 7], [5, 10, 8]])
    >>> seed_formula(w, g, f).round(5).tolist()
    [2.53125, 2.14444]

The write-up prints 2.98 / 0.9 = 3.3111 for neuron j; its own inputs give 1.93 / 0.9 = 2.1444.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.core.criteria.aggregate import sum_to_units
from neuroprune.core.criteria.arrays import as_float, like, namespace, row_sums, take_columns, to_host
from neuroprune.core.criteria.registry import Criterion, Needs, ScoringInput, register_criterion

#: smallest denominator of ``seed`` (a neuron whose incoming weights are all zero scores 0)
_TINY = float(np.finfo(np.float32).tiny)


def seed_formula(weights: Any, gradients: Any, frequencies: Any) -> Any:
    """``s = sum_i |w_i| g_i f_i / sum_i |w_i|`` for each row (one neuron's incoming connections).

    Works on any array-API arrays (numpy, torch, ...) and returns one of the same kind.
    """
    xp = namespace(weights)
    magnitude = xp.abs(weights)
    return xp.sum(magnitude * gradients * frequencies, axis=1) / xp.sum(magnitude, axis=1)


class MagnitudeCriterion(Criterion):
    """L1 (``p=1``) or L2 (``p=2``, default) norm of a neuron's incoming weights.

    ``outgoing=True`` adds the weights that read the neuron.
    """

    name = "magnitude"
    options = ("p", "outgoing")

    def score(self, data, options):
        p = float(options.get("p", 2))
        outgoing = bool(options.get("outgoing", False))
        scores = {}
        for group in data.graph.groups:
            per_position = {}
            for member in group.members:
                views = data.weight_rows(member.path, member.axis, outgoing=outgoing)
                parts = [row_sums(view.rows, p) for view in views]
                if parts:
                    per_position[(member.path, member.axis)] = np.sum(parts, axis=0)
            scores[group.name] = sum_to_units(group, per_position) ** (1.0 / p)
        return scores


class GradientCriterion(Criterion):
    """Mean |dL/dw| over a neuron's incoming weights, accumulated over the calibration batches."""

    name = "gradient"

    def needs(self, options):
        return Needs(gradients=True)

    def score(self, data, options):
        scores = {}
        for group in data.graph.groups:
            sums, counts = {}, {}
            for member in group.members:
                entry = data.stats.axes.get((member.path, member.axis))
                if entry is not None and entry.grad_abs is not None:
                    sums[(member.path, member.axis)] = entry.grad_abs
                    counts[(member.path, member.axis)] = entry.grad_numel
            scores[group.name] = sum_to_units(group, sums) / np.maximum(sum_to_units(group, counts), 1)
        return scores


def _seed_sums(data: ScoringInput, path: str, axis: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Numerator and denominator of :func:`seed_formula` per position of ``(path, axis)``, reduced
    on the weights' device; ``None`` where no incoming weight has gradient statistics."""
    stats = data.stats
    num, den = [], []
    for view in data.weight_rows(path, axis):
        grads = stats.weight_grad_abs.get((path, view.name))  # |dL/dw| summed over batches, as rows
        if grads is None:
            continue
        xp = namespace(view.rows)
        weights = xp.abs(as_float(view.rows))
        mean_grads = like(grads, weights) / max(stats.batches, 1)
        product = weights * mean_grads
        observed = stats.axes.get((path, view.input_axis)) if view.input_axis else None
        if (observed is not None and observed.act_count is not None and observed.act_n > 0
                and view.input_columns is not None):
            frequency = xp.astype(like(observed.act_count, weights), weights.dtype) / observed.act_n
            product = product * take_columns(frequency, view.input_columns, weights)[None, :]
        num.append(to_host(xp.sum(product, axis=1, dtype=xp.float64)))
        den.append(to_host(xp.sum(weights, axis=1, dtype=xp.float64)))
    return (np.sum(num, axis=0), np.sum(den, axis=0)) if num else None


class SeedCriterion(Criterion):
    """The write-up's formula: sum |w| * mean |gradient| * input activation frequency / sum |w|.

    Over the neuron's incoming connections; the frequency is 1 where the input is not observed."""

    name = "seed"

    def needs(self, options):
        return Needs(activations=True, gradients=True, per_weight=True)

    def score(self, data, options):
        scores = {}
        for group in data.graph.groups:
            numerators, denominators = {}, {}
            for member in group.members:
                sums = _seed_sums(data, member.path, member.axis)
                if sums is not None:
                    numerators[(member.path, member.axis)], denominators[(member.path, member.axis)] = sums
            den_units = sum_to_units(group, denominators)
            scores[group.name] = sum_to_units(group, numerators) / np.maximum(den_units, _TINY)
        return scores


for _criterion in (MagnitudeCriterion(), GradientCriterion(), SeedCriterion()):
    register_criterion(_criterion)
