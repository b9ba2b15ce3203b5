"""First-order Taylor importance (Molchanov et al.): ``|sum over samples of a * dL/da|``.

Removing a neuron zeroes the input column of every layer that reads it, so the first-order change
of the loss is ``sum a * dL/da`` over the places it is read. That sum equals
``sum_j w_j * dL/dw_j`` over the weights that read the neuron (the identity holds for Linear,
convolution, recurrent and attention-output weights), which the statistics pass accumulates
without storing any activation.

Example:
    >>> get_criterion("taylor").needs({}).gradients
    True
"""

from __future__ import annotations

import numpy as np

from neuroprune.core.criteria.aggregate import sum_to_units
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion


class TaylorCriterion(Criterion):
    """First-order loss change of removing the neuron: |sum of a * dL/da| where it is read (Molchanov et al. 2017)."""

    name = "taylor"

    def needs(self, options):
        return Needs(gradients=True)

    def score(self, data, options):
        scores = {}
        for group in data.graph.groups:
            sums = {}
            for member in group.members:
                entry = data.stats.axes.get((member.path, member.axis))
                if entry is not None and entry.taylor is not None:
                    sums[(member.path, member.axis)] = entry.taylor
            scores[group.name] = np.abs(sum_to_units(group, sums))
        return scores


register_criterion(TaylorCriterion())

__all__ = ["TaylorCriterion", "get_criterion"]
