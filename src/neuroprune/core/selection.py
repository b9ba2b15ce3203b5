"""Choose which neurons go: by ratio or threshold, per layer or across layers.

Scores are normalised per group (divided by the group's largest score, so they lie in [0, 1]):
a threshold then means "less than this fraction of the layer's most important neuron", and a
global ranking compares layers fairly. A layer never drops below ``min_width`` neurons, and
``round_to`` keeps widths at multiples that run fast.

Example:
    >>> import numpy as np
    >>> from neuroprune.core.groups import Group
    >>> g = Group("fc1", 4, [], np.ones(4, dtype=bool), [])
    >>> lowest_units(g, np.array([0.4, 0.1, 0.9, 0.2]), 2)
    array([1, 3])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from neuroprune.core.errors import PruningTargetError
from neuroprune.core.groups import DependencyGraph, Group


#: scores of every group: group name -> one float per unit (numpy float64, as criteria give them)
Scores = Mapping[str, np.ndarray]


def normalise(scores: np.ndarray) -> np.ndarray:
    """Divide by the largest score (all-zero scores stay zero).

    Example:
        >>> normalise(np.array([1.0, 4.0, 2.0])).tolist()
        [0.25, 1.0, 0.5]
    """
    scores = np.asarray(scores, dtype=np.float64)
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)


def _lowest_mask(values: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` lowest ``values``, ties going to the lower index (no full sort).

    Example:
        >>> _lowest_mask(np.array([0.2, 0.1, 0.2, 0.3]), 2).tolist()
        [True, True, False, False]
    """
    mask = np.zeros(len(values), dtype=bool)
    if count >= len(values):
        mask[:] = True
        return mask
    if count <= 0:
        return mask
    cut = np.partition(values, count - 1)[count - 1]
    missing = np.isnan(values) if np.isnan(cut) else values == cut  # NaN sorts last, as in argsort
    mask = ~np.isnan(values) if np.isnan(cut) else values < cut
    ties = np.nonzero(missing)[0][:count - int(mask.sum())]
    mask[ties] = True
    return mask


def lowest_units(group: Group, scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest-scored prunable units (ties: lower index first), sorted.

    A unit is skipped when removing it would leave some layer of the group with no position
    at all (e.g. every channel of one branch of a concatenation).
    """
    candidates = np.nonzero(group.prunable)[0]
    if count <= 0 or len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)[candidates]
    first = candidates[_lowest_mask(values, count)]
    gone = np.zeros(group.size, dtype=bool)
    gone[first] = True
    # fast path: taking the plain lowest ``count`` leaves every member at least one position
    if all(int(gone[m.unit_of[(m.unit_of >= 0) & (m.unit_of < group.size)]].sum()) < int((m.unit_of >= 0).sum())
           for m in group.members):
        return first.astype(np.int64)
    # otherwise the greedy walk: positions each unit holds on each member, and each member's total
    held = np.stack([np.bincount(m.unit_of[m.unit_of >= 0], minlength=group.size)[:group.size]
                     for m in group.members]) if group.members else np.zeros((0, group.size), dtype=np.int64)
    remaining = np.array([int((m.unit_of >= 0).sum()) for m in group.members], dtype=np.int64)
    order = candidates[np.argsort(values, kind="stable")]
    chosen: list[np.ndarray] = []
    taken = 0
    while taken < count and len(order):
        # a unit that alone would empty a member can never be taken later either (members only shrink)
        order = order[~(held[:, order] >= remaining[:, None]).any(axis=0)]
        if not len(order):
            break
        # take units in order until one would empty a member: all before it are accepted, it is skipped
        used = np.cumsum(held[:, order], axis=1)
        blocked = np.nonzero((used >= remaining[:, None]).any(axis=0))[0]
        stop = min(int(blocked[0]) if len(blocked) else len(order), count - taken)
        chosen.append(order[:stop])
        taken += stop
        if stop:
            remaining = remaining - used[:, stop - 1]
        order = order[stop + 1:] if len(blocked) and stop == int(blocked[0]) else order[stop:]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def _kept_after_rounding(size: int, keep: int, min_width: int, round_to: int) -> int:
    keep = max(keep, min_width, 1)
    if round_to > 1:
        keep = min(size, int(math.ceil(keep / round_to) * round_to))
    return min(keep, size)


def counts_for_ratio(graph: DependencyGraph, scores: Scores, original: dict[str, int],
                     ratio: float, *, scope: str = "local", min_width: int = 1, round_to: int = 1,
                     ratios: dict[str, float] | None = None, min_widths: dict[str, int] | None = None,
                     skip: tuple[str, ...] | set[str] = ()) -> dict[str, int]:
    """How many units each group loses now so that ``ratio`` of the original widths is gone.

    Args:
        graph: the model's current groups.
        scores: current scores per group (used by ``scope="global"``).
        original: each group's width before any pruning.
        ratio: cumulative fraction of the original neurons to have removed.
        scope: ``"local"`` (the ratio in every group) or ``"global"`` (the ratio over all groups,
            lowest normalised scores first).
        ratios: per-group ratios overriding ``ratio`` (always applied per group).
        min_widths: per-group minimum widths overriding ``min_width``.
        skip: groups left alone.
    """
    ratios, min_widths = ratios or {}, min_widths or {}
    counts = {g.name: 0 for g in graph.groups}
    pooled = []
    for group in graph.groups:
        if group.name in skip:
            continue
        if scope == "global" and group.name not in ratios:
            pooled.append(group)
            continue
        width0 = original.get(group.name, group.size)
        share = ratios.get(group.name, ratio)
        floor = min_widths.get(group.name, min_width)
        target = _kept_after_rounding(group.size, width0 - math.floor(share * width0 + 1e-9), floor, round_to)
        fixed = group.size - group.prunable_count
        counts[group.name] = max(0, group.size - max(target, fixed))
    if not pooled:
        return counts
    total0 = sum(original.get(g.name, g.size) for g in pooled)
    removed_so_far = sum(original.get(g.name, g.size) - g.size for g in pooled)
    need = max(0, math.floor(ratio * total0 + 1e-9) - removed_so_far)
    counts.update(_global_counts(pooled, scores, need, min_width, min_widths))
    for group in pooled:
        floor = min_widths.get(group.name, min_width)
        keep = _kept_after_rounding(group.size, group.size - counts[group.name], floor, round_to)
        counts[group.name] = group.size - keep
    return counts


def _global_counts(pooled: list[Group], scores: Scores, need: int, min_width: int,
                   min_widths: dict[str, int]) -> dict[str, int]:
    """Units each pooled group loses when the ``need`` lowest normalised scores go across groups.

    Candidates are ranked by (normalised score, group name, unit index); a group stops giving
    units once it is down to ``max(min_width, 1)``.
    """
    rank_of = {name: rank for rank, name in enumerate(sorted(g.name for g in pooled))}
    values, names, caps = [], [], []
    for group in pooled:
        prunable = np.nonzero(group.prunable)[0]
        values.append(normalise(scores[group.name])[prunable])
        names.append(np.full(len(prunable), rank_of[group.name], dtype=np.int64))
        caps.append(max(0, group.size - max(min_widths.get(group.name, min_width), 1)))
    # concatenated in (group name, unit) order, so ties in score go to the lower (name, unit)
    by_rank = sorted(range(len(pooled)), key=lambda index: rank_of[pooled[index].name])
    eligible = np.concatenate([_lowest_mask(values[i], caps[i]) for i in by_rank])
    value = np.concatenate([values[i] for i in by_rank])
    name = np.concatenate([names[i] for i in by_rank])
    taken = name[eligible][_lowest_mask(value[eligible], need)]
    lost = np.bincount(taken, minlength=len(pooled))
    return {group.name: int(lost[rank_of[group.name]]) for group in pooled}


def counts_for_threshold(graph: DependencyGraph, scores: Scores, threshold: float, *,
                         min_width: int = 1, round_to: int = 1, min_widths: dict[str, int] | None = None,
                         skip: tuple[str, ...] | set[str] = ()) -> dict[str, int]:
    """Units whose normalised score lies below ``threshold``, per group.

    Raises:
        PruningTargetError: the threshold would remove every neuron of a group.
    """
    counts = {}
    min_widths = min_widths or {}
    for group in graph.groups:
        if group.name in skip:
            counts[group.name] = 0
            continue
        normalised = normalise(scores[group.name])
        below = int((normalised[group.prunable] < threshold).sum())
        if below == group.size:
            raise PruningTargetError(
                f"threshold {threshold} would remove every neuron of layer {group.name!r} (normalised scores lie in "
                "[0, 1], the layer's best neuron scores 1); use a threshold of at most 1")
        keep = _kept_after_rounding(group.size, group.size - below, min_widths.get(group.name, min_width), round_to)
        counts[group.name] = group.size - keep
    return counts


def select_units(graph: DependencyGraph, scores: Scores, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """The lowest-scored units of each group, ``counts[name]`` of them, never all the units a member
    layer has (:func:`spare_every_member`)."""
    return {g.name: spare_every_member(g, scores[g.name], lowest_units(g, scores[g.name], counts.get(g.name, 0)))
            for g in graph.groups if counts.get(g.name, 0) > 0}


def spare_every_member(group: Group, scores: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``removed`` without the best-scored unit of any member axis it would empty.

    A group may join producers that each hold only some of its units (layers concatenated, then
    added to a residual): removing all of one producer's units would leave a layer of width 0.

    Example:
        >>> from neuroprune.core.groups import GroupMember
        >>> g = Group("g", 4, [GroupMember("a", "out", np.array([0, 1])), GroupMember("b", "out", np.array([2, 3]))],
        ...           np.ones(4, dtype=bool), [("a", "out"), ("b", "out")])
        >>> spare_every_member(g, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 2])).tolist()
        [0, 2]
    """
    values = np.asarray(scores, dtype=np.float64)
    gone = np.zeros(group.size, dtype=bool)
    gone[removed] = True
    for member in group.members:
        units = member.unit_of[(member.unit_of >= 0) & (member.unit_of < group.size)]
        if len(units) and gone[units].all():
            gone[units[np.argmax(values[units])]] = False
    return np.nonzero(gone)[0]
