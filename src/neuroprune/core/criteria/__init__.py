"""Importance criteria: one score per neuron (unit) of every group; higher means more important.

Example:
    >>> from neuroprune.core.criteria import criterion_names
    >>> print(" ".join(criterion_names()))
    activation_frequency activation_mean flap gradient magnitude obs random rank seed taylor wanda
"""

from __future__ import annotations

from neuroprune.core.criteria import activations, combine, decoder, obs, taylor, weights  # noqa: F401  (register the criteria)
from neuroprune.core.criteria.registry import Criterion, ScoringInput, criterion_names, get_criterion, register_criterion, score

__all__ = ["Criterion", "ScoringInput", "criterion_names", "get_criterion", "register_criterion", "score"]
