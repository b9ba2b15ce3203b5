"""Criteria built from others: ``rank`` (the write-up's merge sorting) and ``random``.

Example:
    >>> import numpy as np
    >>> rank_average([np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])], [1.0, 1.0]).tolist()
    [0.5, 0.25, 0.75]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuroprune.core.criteria.arrays import to_host
from neuroprune.core.errors import ConfigError
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion

DEFAULT_RANK_MEMBERS = ("magnitude", "taylor", "activation_frequency")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of ``values``; ties share their mean rank (all NaN if any value is NaN).

    The same as ``scipy.stats.rankdata(values, method="average") - 1``.

    Example:
        >>> average_ranks(np.array([2.0, 1.0, 2.0, 0.5])).tolist()
        [2.5, 1.0, 2.5, 0.0]
    """
    values = np.asarray(values)
    n = len(values)
    if np.isnan(values).any():
        return np.full(n, np.nan)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each tie run
    ends = np.r_[starts[1:], n]
    run = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0)[run]
    return ranks


def rank_average(scores: list[Any], weights: list[float]) -> np.ndarray:
    """Weighted mean of each score's rank, scaled to [0, 1] (ties share their mean rank)."""
    n = len(scores[0])
    total = np.zeros(n)
    for values, weight in zip(scores, weights):
        total += weight * (average_ranks(to_host(values)) / max(n - 1, 1))
    return total / sum(weights)


def _members(options) -> tuple[list[str], list[float], dict]:
    members = list(options.get("members", DEFAULT_RANK_MEMBERS))
    weights = [float(w) for w in options.get("weights", [1.0] * len(members))]
    problems = []
    if "rank" in members:
        problems.append("rank cannot be a member of itself")
    if len(weights) != len(members):
        problems.append(f"rank has {len(members)} members but {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        problems.append(f"rank weights must be >= 0 with a positive sum, got {weights}")
    if problems:
        raise ConfigError(problems)
    for name in members:
        get_criterion(name)
    return members, weights, dict(options.get("member_options", {}))


class RankCriterion(Criterion):
    """Mean rank over several criteria (default: magnitude, taylor, activation_frequency)."""

    name = "rank"
    options = ("members", "weights", "member_options")

    def needs(self, options):
        members, _, member_options = _members(options)
        needs = Needs()
        for name in members:
            needs = needs | get_criterion(name).needs(member_options.get(name, {}))
        return needs

    def score(self, data, options):
        members, weights, member_options = _members(options)
        per_member = [get_criterion(name).score(data, member_options.get(name, {})) for name in members]
        return {group.name: rank_average([scores[group.name] for scores in per_member], weights)
                for group in data.graph.groups}


class RandomCriterion(Criterion):
    """Uniform random scores: the baseline every criterion should beat."""

    name = "random"
    options = ("seed",)

    def score(self, data, options):
        generator = np.random.RandomState(int(options.get("seed", 0)) & 0xFFFFFFFF)
        return {group.name: uniform_scores(generator, group.size) for group in data.graph.groups}


def uniform_scores(generator: np.random.RandomState, size: int) -> np.ndarray:
    """``size`` uniform numbers in [0, 1) with 24 random bits each: the very numbers
    ``torch.rand(size, generator=torch.Generator().manual_seed(seed))`` draws (both run the
    Mersenne twister from the same seed), so random baselines stay what they were.

    Example:
        >>> uniform_scores(np.random.RandomState(0), 3).round(4).tolist()
        [0.4963, 0.7682, 0.0885]
    """
    bits = generator.randint(0, 2**32, size=size, dtype=np.uint32)  # one raw 32-bit draw each
    return (bits & np.uint32((1 << 24) - 1)).astype(np.float64) * 2.0**-24


register_criterion(RankCriterion())
register_criterion(RandomCriterion())
