"""Criteria read from activations: how often a neuron fires and how strongly.

A neuron's activations are observed where they are read (inputs of the layers that consume it;
per-head outputs for attention), per sample and position.

Example:
    >>> get_criterion("activation_frequency").options
    ()
"""

from __future__ import annotations

import numpy as np

from neuroprune.core.criteria.aggregate import sum_to_units
from neuroprune.core.errors import DataError
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion


def _activation_ratio(data, field: str) -> dict[str, np.ndarray]:
    scores = {}
    for group in data.graph.groups:
        sums, counts = {}, {}
        for member in group.members:
            entry = data.stats.axes.get((member.path, member.axis))
            if entry is not None and entry.act_count is not None and entry.act_n > 0:
                sums[(member.path, member.axis)] = getattr(entry, field)
                counts[(member.path, member.axis)] = np.full(len(entry.act_count), float(entry.act_n))
        seen = sum_to_units(group, counts)
        if bool((seen[group.prunable] == 0).any()):
            raise DataError(f"group {group.name!r}: some neurons are never read by an observed layer, so their "
                            "activations are unknown; use a weight- or gradient-based criterion")
        scores[group.name] = sum_to_units(group, sums) / np.maximum(seen, 1)
    return scores


class ActivationFrequencyCriterion(Criterion):
    """Fraction of observed values above the threshold (APoZ is one minus this)."""

    name = "activation_frequency"

    def needs(self, options):
        return Needs(activations=True)

    def score(self, data, options):
        return _activation_ratio(data, "act_count")


class ActivationMeanCriterion(Criterion):
    """Mean |activation|."""

    name = "activation_mean"

    def needs(self, options):
        return Needs(activations=True)

    def score(self, data, options):
        return _activation_ratio(data, "act_abs")


register_criterion(ActivationFrequencyCriterion())
register_criterion(ActivationMeanCriterion())

__all__ = ["get_criterion"]
