"""Why a layer kept more neurons than the run asked for: the report's ``kept_because``.

A layer's width after pruning can exceed its target for structural reasons (units tied to the
model's output, to a frozen module or to a fixed tensor: the group's frozen reasons), because of
a floor (``min_width``, ``round_to``), a layer rule that ignores it, removals that would empty a
member layer (one branch of a concatenation), or validation roll-backs. Listing them per layer
shows users where the remaining parameters are.

Example:
    >>> import numpy as np
    >>> from neuroprune.core.groups import Group
    >>> prunable = np.array([False, False, True, True])
    >>> g = Group("fc1", 4, [], prunable, [], ["fc2: model output"])
    >>> layer_entry(g, width_after=2, target=1, min_width=1, round_to=1, ignored=False, rolled_back=False)["kept_because"]
    ['2 units fixed: fc2: model output']
"""

from __future__ import annotations

import math
from typing import Any

from neuroprune.core.groups import DependencyGraph, Group


def target_width(width: int, ratio: float | None) -> int | None:
    """Width a layer-wise ratio asks for (``None``: no per-layer target, e.g. a threshold)."""
    if ratio is None:
        return None
    return width - math.floor(ratio * width + 1e-9)


def layer_entry(group: Group, *, width_after: int, target: int | None, min_width: int, round_to: int,
                ignored: bool, rolled_back: bool) -> dict[str, Any]:
    """The report row of one group: widths, fixed units and every reason it kept more."""
    fixed = group.size - group.prunable_count
    reasons = []
    if ignored:
        reasons.append("ignored by a layer rule")
    if fixed:
        reasons.append(f"{fixed} units fixed: {'; '.join(group.frozen_reasons) or 'fixed'}")
    if target is not None and width_after > target and not ignored:
        if min_width > target and width_after <= max(min_width, fixed):
            reasons.append(f"min_width {min_width}")
        if round_to > 1 and width_after % round_to == 0:
            reasons.append(f"round_to {round_to}")
        if rolled_back:
            reasons.append("validation rolled back part of the removal")
        if width_after > max(min_width, fixed, target) and round_to == 1 and not rolled_back:
            reasons.append("removing more would empty a layer of the group")
    return {"name": group.name, "width_before": group.size, "width_after": width_after,
            "fixed_units": fixed, "kept_because": reasons}


def layer_entries(graph: DependencyGraph, widths: dict[str, int], settings: dict, config, *,
                  rolled_back: bool) -> list[dict[str, Any]]:
    """Report rows for every group of ``graph`` (the unpruned model's), after a run of ``config``."""
    rows = []
    for group in graph.groups:
        s = settings.get(group.name)
        ratio = config.ratio if s is None or s.ratio is None else s.ratio
        local = config.threshold is None and (config.scope == "local" or (s is not None and s.ratio is not None))
        rows.append(layer_entry(
            group, width_after=widths.get(group.name, group.size),
            target=target_width(group.size, ratio) if local else None,
            min_width=s.min_width if s is not None else config.min_width, round_to=config.round_to,
            ignored=bool(s is not None and s.ignore), rolled_back=rolled_back))
    return rows
