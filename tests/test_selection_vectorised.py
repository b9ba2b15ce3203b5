"""The vectorised selection chooses exactly what a plain per-unit loop chooses.

The reference functions below walk units one at a time, as the selection did before it was
vectorised: ties go to the lower unit index (and, across groups, to the lower group name), a
unit is skipped when it would empty a layer of its group, a group stops at ``min_width``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroprune.core.criteria.arrays import to_host
from neuroprune.core.errors import PlanError
from neuroprune.core.groups import DependencyGraph, Group, GroupMember
from neuroprune.core.selection import counts_for_ratio, lowest_units, normalise, select_units

# ---- reference ------------------------------------------------------------------------------


def ref_lowest_units(group: Group, scores: np.ndarray, count: int) -> list[int]:
    units = [u for u in range(group.size) if group.prunable[u]]
    units.sort(key=lambda u: (float(scores[u]), u))
    left = [sum(1 for v in m.unit_of if v >= 0) for m in group.members]
    chosen = []
    for unit in units:
        if len(chosen) == count:
            break
        held = [sum(1 for v in m.unit_of if v == unit) for m in group.members]
        if all(n - h >= 1 for n, h in zip(left, held)):
            chosen.append(unit)
            left = [n - h for n, h in zip(left, held)]
    return sorted(chosen)


def ref_kept(size: int, keep: int, min_width: int, round_to: int) -> int:
    keep = max(keep, min_width, 1)
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return min(keep, size)


def ref_counts(graph, scores, original, ratio, scope, min_width, round_to, skip):
    counts = {g.name: 0 for g in graph.groups}
    pooled = [g for g in graph.groups if g.name not in skip] if scope == "global" else []
    for group in graph.groups:
        if group.name in skip or scope == "global":
            continue
        width0 = original.get(group.name, group.size)
        target = ref_kept(group.size, width0 - math.floor(ratio * width0 + 1e-9), min_width, round_to)
        counts[group.name] = max(0, group.size - max(target, group.size - group.prunable_count))
    if not pooled:
        return counts
    total0 = sum(original.get(g.name, g.size) for g in pooled)
    need = max(0, math.floor(ratio * total0 + 1e-9) - sum(original.get(g.name, g.size) - g.size for g in pooled))
    candidates = sorted((float(normalise(scores[g.name])[u]), g.name, u)
                        for g in pooled for u in range(g.size) if g.prunable[u])
    left = {g.name: g.size for g in pooled}
    for _, name, _ in candidates:
        if need and left[name] > max(min_width, 1):
            left[name] -= 1
            counts[name] += 1
            need -= 1
    for group in pooled:
        counts[group.name] = group.size - ref_kept(group.size, group.size - counts[group.name], min_width, round_to)
    return counts


def ref_keep_indices(graph, removal):
    keep = {}
    for name, units in removal.items():
        group = next(g for g in graph.groups if g.name == name)
        for member in group.members:
            gone = {p for p, u in enumerate(member.unit_of) if u in set(int(x) for x in units)}
            if gone:
                keep.setdefault(member.path, {}).setdefault(member.axis, set()).update(gone)
    return {path: {axis: [p for p in range(graph.axis_sizes[path][axis]) if p not in gone]
                   for axis, gone in axes.items()} for path, axes in keep.items()}

# ---- random groups --------------------------------------------------------------------------


@st.composite
def groups(draw, name: str):
    """A group whose members hold each unit 0..3 times (or not at all), some positions unmapped."""
    size = draw(st.integers(1, 12))
    members = []
    for index in range(draw(st.integers(1, 3))):
        unit_of = np.array(draw(st.lists(st.integers(-1, size - 1), min_size=1, max_size=3 * size)), dtype=np.int64)
        members.append(GroupMember(f"{name}.m{index}", "out", unit_of))
    prunable = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=bool)
    return Group(name, size, members, prunable, [])


@st.composite
def graphs(draw):
    names = draw(st.lists(st.sampled_from(["b", "a", "c.1", "c.0", "fc"]), min_size=1, max_size=4, unique=True))
    found = [draw(groups(name)) for name in names]
    sizes = {m.path: {m.axis: len(m.unit_of)} for g in found for m in g.members}
    graph = DependencyGraph(found, {}, {}, sizes)
    # few distinct values, so ties are common (including all-zero groups)
    scores = {g.name: np.array(draw(st.lists(st.integers(0, 3), min_size=g.size, max_size=g.size)),
                               dtype=np.float64) / 4 for g in found}
    return graph, scores


# ---- properties -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=graphs(), count=st.integers(0, 14))
def test_lowest_units_equals_the_unit_by_unit_walk(data, count):
    graph, scores = data
    for group in graph.groups:
        got = lowest_units(group, scores[group.name], count)
        assert got.dtype == np.int64
        assert got.tolist() == ref_lowest_units(group, scores[group.name], count)


@settings(max_examples=300, deadline=None)
@given(data=graphs(), ratio=st.floats(0, 1), scope=st.sampled_from(["local", "global"]),
       min_width=st.integers(1, 5), round_to=st.sampled_from([1, 2, 4]), skip_first=st.booleans(),
       shrunk=st.integers(0, 4))
def test_counts_and_selection_equal_the_reference(data, ratio, scope, min_width, round_to, skip_first, shrunk):
    graph, scores = data
    skip = {graph.groups[0].name} if skip_first else set()
    original = {g.name: g.size + shrunk for g in graph.groups}  # some pruning already happened
    counts = counts_for_ratio(graph, scores, original, ratio, scope=scope, min_width=min_width,
                              round_to=round_to, skip=skip)
    assert counts == ref_counts(graph, scores, original, ratio, scope, min_width, round_to, skip)
    removal = select_units(graph, scores, counts)
    assert {k: v.tolist() for k, v in removal.items()} == {
        g.name: ref_lowest_units(g, scores[g.name], counts[g.name]) for g in graph.groups if counts[g.name] > 0}


@settings(max_examples=300, deadline=None)
@given(data=graphs(), picks=st.lists(st.integers(0, 11), max_size=8))
def test_keep_indices_equals_set_difference(data, picks):
    graph, _ = data
    removal = {g.name: np.unique([p % g.size for p in picks if g.prunable[p % g.size]]).astype(np.int64)
               for g in graph.groups}
    expected = ref_keep_indices(graph, removal)
    if any(not kept for axes in expected.values() for kept in axes.values()):
        with pytest.raises(PlanError, match="removing every position"):
            graph.keep_indices(removal)
        return
    got = graph.keep_indices(removal)
    assert {p: {a: t.tolist() for a, t in axes.items()} for p, axes in got.items()} == expected
    assert all(isinstance(t, np.ndarray) and t.dtype == np.int64 for axes in got.values() for t in axes.values())


def test_global_ties_go_to_the_lower_group_name_then_unit():
    members = lambda name: [GroupMember(name, "out", np.arange(4))]  # noqa: E731
    graph = DependencyGraph([Group(n, 4, members(n), np.ones(4, dtype=bool), []) for n in ("b", "a")], {}, {},
                            {"a": {"out": 4}, "b": {"out": 4}})
    scores = {"a": np.ones(4), "b": np.ones(4)}  # every normalised score is 1
    assert counts_for_ratio(graph, scores, {}, 3 / 8, scope="global") == {"b": 0, "a": 3}
    assert select_units(graph, scores, {"a": 3})["a"].tolist() == [0, 1, 2]


def test_unit_that_would_empty_a_branch_is_skipped_and_the_next_taken():
    # member "cat" holds only units 0 and 1: both cannot go, so the third lowest replaces the second
    group = Group("g", 4, [GroupMember("conv", "out", np.arange(4)), GroupMember("cat", "in", np.array([0, 1]))],
                  np.ones(4, dtype=bool), [])
    assert lowest_units(group, np.array([0.1, 0.2, 0.9, 0.3]), 2).tolist() == [0, 3]


def test_bfloat16_and_float16_scores_select_like_float64():
    group = Group("g", 6, [GroupMember("fc", "out", np.arange(6))], np.ones(6, dtype=bool), [])
    scores = np.array([0.5, 0.25, 0.75, 0.25, 1.0, 0.0])
    expected = lowest_units(group, scores, 3).tolist()
    assert expected == [1, 3, 5]
    for dtype in (np.float16, np.float32):
        assert lowest_units(group, scores.astype(dtype), 3).tolist() == expected
    for dtype in (torch.float16, torch.bfloat16):  # a framework's scores, as criteria bring them to the host
        assert lowest_units(group, to_host(torch.tensor(scores).to(dtype)), 3).tolist() == expected


def test_nan_scores_go_last_in_index_order():
    group = Group("g", 5, [GroupMember("fc", "out", np.arange(5))], np.ones(5, dtype=bool), [])
    scores = np.array([float("nan"), 0.5, float("nan"), 0.1, 0.2])
    assert lowest_units(group, scores, 4).tolist() == [0, 1, 3, 4]
