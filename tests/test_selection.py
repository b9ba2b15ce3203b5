"""Selection: ratio, threshold, global scope, minimum width and rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import mlp

from neuroprune import discover
from neuroprune.core.errors import PruningTargetError
from neuroprune.core.selection import counts_for_ratio, counts_for_threshold, lowest_units, normalise, select_units


RNG = np.random.default_rng(0)


@pytest.fixture
def graph():
    return discover(mlp((4, 10, 6, 2)), torch.randn(2, 4))


def test_local_ratio_is_cumulative_against_original_widths(graph):
    scores = {g.name: RNG.random(g.size) for g in graph.groups}
    assert counts_for_ratio(graph, scores, {"0": 10, "2": 6}, 0.5) == {"0": 5, "2": 3}
    # a model already pruned to 8 and 6 only loses what is still missing
    assert counts_for_ratio(graph, scores, {"0": 12, "2": 6}, 0.5) == {"0": 4, "2": 3}


def test_min_width_and_round_to(graph):
    scores = {g.name: RNG.random(g.size) for g in graph.groups}
    assert counts_for_ratio(graph, scores, {}, 0.9, min_width=3) == {"0": 7, "2": 3}
    assert counts_for_ratio(graph, scores, {}, 0.7, round_to=4) == {"0": 6, "2": 2}  # keeps 4 of 10, 4 of 6


def test_global_ratio_compares_normalised_scores(graph):
    scores = {"0": np.linspace(0.1, 1.0, 10), "2": np.array([0.01, 1, 1, 1, 1, 1.0])}
    counts = counts_for_ratio(graph, scores, {}, 0.25, scope="global")  # 4 of 16 go
    assert counts == {"0": 3, "2": 1}
    removal = select_units(graph, scores, counts)
    assert removal["0"].tolist() == [0, 1, 2] and removal["2"].tolist() == [0]


def test_global_respects_min_width(graph):
    scores = {"0": np.ones(10), "2": np.array([0.0, 0, 0, 0, 0, 1])}
    counts = counts_for_ratio(graph, scores, {}, 0.5, scope="global", min_width=2)
    assert counts["2"] == 4 and sum(counts.values()) == 8


def test_threshold_on_normalised_scores(graph):
    scores = {"0": np.arange(1.0, 11.0), "2": np.array([5.0, 1, 1, 5, 5, 5])}
    assert counts_for_threshold(graph, scores, 0.35) == {"0": 3, "2": 2}
    with pytest.raises(PruningTargetError, match="threshold 1.5 would remove every neuron of layer '0'"):
        counts_for_threshold(graph, scores, 1.5)


def test_lowest_units_skip_fixed_units_and_break_ties_by_index(graph):
    group = graph.groups[0]
    group.prunable = np.array([False] + [True] * 9)
    assert lowest_units(group, np.zeros(10), 3).tolist() == [1, 2, 3]


def test_normalise():
    assert normalise(np.array([1.0, 4.0])).tolist() == [0.25, 1.0]
    assert normalise(np.zeros(3)).tolist() == [0, 0, 0]
