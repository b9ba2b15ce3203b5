"""Criteria built from others: ``rank`` (the write-up's merge sorting) and ``random``.

Example:
    >>> rank_average([torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])], [1.0, 1.0])
    tensor([0.5000, 0.2500, 0.7500])
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from neuroprune.core.errors import ConfigError
from neuroprune.core.criteria.registry import Criterion, Needs, get_criterion, register_criterion

DEFAULT_RANK_MEMBERS = ("magnitude", "taylor", "activation_frequency")


def rank_average(scores: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Weighted mean of each score's rank, scaled to [0, 1] (ties share their mean rank)."""
    n = len(scores[0])
    total = np.zeros(n)
    for values, weight in zip(scores, weights):
        ranks = rankdata(values.numpy(), method="average") - 1
        total += weight * (ranks / max(n - 1, 1))
    return torch.tensor(total / sum(weights), dtype=torch.float32)


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
        generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
        return {group.name: torch.rand(group.size, generator=generator) for group in data.graph.groups}


register_criterion(RankCriterion())
register_criterion(RandomCriterion())
